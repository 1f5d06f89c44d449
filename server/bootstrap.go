package server

import (
	"context"
	"fmt"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// DefaultTenant is the tenant every installation starts with.
const DefaultTenant = "default"

// Bootstrap prepares a fresh installation: it creates the default tenant
// and, if no API key exists yet, a super-admin key for user "admin". The
// key's token is returned once ("" if keys already existed); only its
// hash is stored. It must run on the leader.
func (s *Server) Bootstrap(ctx context.Context) (token string, err error) {
	if _, ok := s.fsm.Tenant(DefaultTenant); !ok {
		t := fsm.Tenant{ID: DefaultTenant, Name: "Default", CreatedAt: s.now()}
		if _, err := s.raft.Apply(ctx, &fsm.CreateTenant{Tenant: t}); err != nil {
			return "", fmt.Errorf("create default tenant: %w", err)
		}
	}
	if s.fsm.KeyCount() > 0 {
		return "", nil
	}
	token, key := NewAPIKey(DefaultTenant, "admin", fsm.RoleSuperAdmin, s.now(), 0)
	if _, err := s.raft.Apply(ctx, &fsm.CreateAPIKey{Key: key}); err != nil {
		return "", fmt.Errorf("create admin key: %w", err)
	}
	return token, nil
}
