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

// BootstrapEmail is the email of the super-admin user that cluster init
// and dev mode create.
const BootstrapEmail = "admin@localhost"

// InitCluster initializes a new installation: the default tenant, the
// super-admin user BootstrapEmail and its first key, the user and key in
// one entry. The key's token is returned exactly once; only its hash is
// stored. If the cluster already has a key, it fails with already_exists,
// whichever node is asked.
//
// An installation initialized before keys had users has a first key
// without a user: it keeps working as the super-admin of its own tenant
// (keyPrincipal), and no user is created for it.
func (s *Server) InitCluster(ctx context.Context) (token string, err error) {
	if err := s.ensureDefaultTenant(ctx); err != nil {
		return "", err
	}
	now := s.now()
	u := fsm.User{ID: newID(), Email: BootstrapEmail, TenantID: DefaultTenant, Role: fsm.RoleSuperAdmin, CreatedAt: now, CreatedBy: "cluster init"}
	token, key := NewAPIKey(DefaultTenant, BootstrapEmail, fsm.RoleSuperAdmin, now, 0)
	key.UserID, key.Name = u.ID, "cluster init"
	if _, err := s.raft.Apply(ctx, &fsm.CreateUser{User: u, Key: &key, First: true}); err != nil {
		if fsm.ErrorCode(err) == fsm.CodeAlreadyExists {
			return "", fsm.Errorf(fsm.CodeAlreadyExists, "the cluster is already initialized")
		}
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
