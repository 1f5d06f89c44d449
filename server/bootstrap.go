package server

import (
	"context"
	"fmt"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// DefaultTenant is the tenant every installation starts with.
const DefaultTenant = "default"

// ensureDefaultTenant creates the default tenant if it does not exist.
func (s *Server) ensureDefaultTenant(ctx context.Context) error {
	if _, ok := s.fsm.Tenant(DefaultTenant); ok {
		return nil
	}
	t := fsm.Tenant{ID: DefaultTenant, Name: DefaultTenant, CreatedAt: s.now(), CreatedBy: "cluster init"}
	_, err := s.raft.Apply(ctx, &fsm.CreateTenant{Tenant: t})
	if err != nil && fsm.ErrorCode(err) != fsm.CodeAlreadyExists {
		return fmt.Errorf("create default tenant: %w", err)
	}
	return nil
}

// InitCluster initializes a new installation: the default tenant and the
// first super-admin key, for user "admin". The key's token is returned
// exactly once; only its hash is stored. If the cluster already has a
// key, it fails with already_exists, whichever node is asked.
func (s *Server) InitCluster(ctx context.Context) (token string, err error) {
	if err := s.ensureDefaultTenant(ctx); err != nil {
		return "", err
	}
	token, key := NewAPIKey(DefaultTenant, "admin", fsm.RoleSuperAdmin, s.now(), 0)
	if _, err := s.raft.Apply(ctx, &fsm.CreateAPIKey{Key: key, First: true}); err != nil {
		return "", err
	}
	return token, nil
}

// Bootstrap is InitCluster for dev mode: on a fresh installation it
// returns the first key; later it returns "" and no error.
func (s *Server) Bootstrap(ctx context.Context) (token string, err error) {
	token, err = s.InitCluster(ctx)
	if fsm.ErrorCode(err) == fsm.CodeAlreadyExists {
		return "", nil
	}
	return token, err
}
