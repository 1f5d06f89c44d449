package fsm

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file holds users, invitations and the lifecycle of API keys: their
// types, commands, validation and apply functions. Users and invitations
// are kinds of the registry (kind.go); their commands are in the command
// table (commands.go).

// User is a person (or a service) of a tenant. Its API keys act with its
// role in its tenant; disabling it stops all of them at once. Email is
// unique per installation, compared case-insensitively.
type User struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	TenantID  string    `json:"tenant_id"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	// CreatedBy names who created the user: a user's email, or a key's
	// user for keys that belong to no user.
	CreatedBy string `json:"created_by,omitempty"`
	Disabled  bool   `json:"disabled,omitempty"`
	Meta
}

// Invitation lets whoever holds its one-time token become a user of a
// tenant with a role. Only the SHA-256 of the token's secret is stored.
type Invitation struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id"`
	Email     string    `json:"email"`
	Role      Role      `json:"role"`
	Hash      []byte    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	// AcceptedAt and UserID are set when the invitation was used.
	AcceptedAt time.Time `json:"accepted_at,omitzero"`
	UserID     string    `json:"user_id,omitempty"`
	Revoked    bool      `json:"revoked,omitempty"`
	Meta
}

// ObjectID implements Object.
func (u *User) ObjectID() string { return u.ID }

// ObjectID implements Object.
func (i *Invitation) ObjectID() string { return i.ID }

// Bounds of users, keys and invitations.
const (
	// MaxEmailLen bounds an email address, in bytes.
	MaxEmailLen = 254
	// MaxScopes bounds the scopes of one key.
	MaxScopes = 64
	// MaxGrace bounds the overlap of a rotated key with its successor.
	MaxGrace = 90 * 24 * time.Hour
	// MaxTouches bounds the keys of one TouchAPIKeys.
	MaxTouches = 1000
)

// RolesByPower lists the roles from least to most powerful.
var RolesByPower = []Role{RoleViewer, RoleOperator, RoleTenantAdmin, RoleSuperAdmin}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return slices.Contains(RolesByPower, r) }

// EmailKey is the form an email is compared in: lower case. Emails are
// ASCII (ValidEmail), so lower-casing is the same everywhere.
func EmailKey(email string) string { return strings.ToLower(email) }

// ValidEmail checks an email address: ASCII, one "@", a local part of
// printable characters without spaces, quotes or brackets, and a domain of
// dot-separated labels of letters, digits and hyphens.
func ValidEmail(email string) error {
	if email == "" {
		return invalid("email is required")
	}
	if len(email) > MaxEmailLen {
		return invalid("email is longer than %d bytes", MaxEmailLen)
	}
	local, domain, ok := strings.Cut(email, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") || len(local) > 64 {
		return invalid("email %q is not an address such as name@example.com", email)
	}
	for _, r := range local {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),:;<>[\]`, r) {
			return invalid("email %q is not an address such as name@example.com", email)
		}
	}
	for label := range strings.SplitSeq(domain, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return invalid("email %q has an invalid domain", email)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return invalid("email %q has an invalid domain", email)
			}
		}
	}
	return nil
}

// CreateUser creates a user and, if Key is set, its first API key in the
// same entry. With First set it initializes the cluster and is refused if
// any key exists (see CreateAPIKey.First).
type CreateUser struct {
	User  User    `json:"user"`
	Key   *APIKey `json:"key,omitempty"`
	First bool    `json:"first,omitempty"`
}

// UpdateUser changes a user's role or disabled flag; a field left empty
// (nil) is unchanged.
type UpdateUser struct {
	ID       string    `json:"id"`
	Role     Role      `json:"role,omitempty"`
	Disabled *bool     `json:"disabled,omitempty"`
	At       time.Time `json:"at"`
}

// CreateInvitation stores an invitation (its token's hash only).
type CreateInvitation struct {
	Invitation Invitation `json:"invitation"`
}

// AcceptInvitation uses an invitation: in one entry it marks it accepted,
// creates User (email, tenant and role come from the invitation) and the
// user's first key. The edge has checked the token; Apply refuses an
// invitation that is used, revoked or expired at the entry's time.
type AcceptInvitation struct {
	InvitationID string    `json:"invitation_id"`
	User         User      `json:"user"`
	Key          APIKey    `json:"key"`
	At           time.Time `json:"at"`
}

// RevokeInvitation revokes an invitation not used yet.
type RevokeInvitation struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// RotateAPIKey replaces key ID by Key (its successor, which inherits its
// user, tenant, role, scopes and name) and makes ID expire Grace after
// the entry's time, or at its own expiry if that is sooner: both keys
// work until then.
type RotateAPIKey struct {
	ID    string    `json:"id"`
	Key   APIKey    `json:"key"`
	Grace Duration  `json:"grace"`
	At    time.Time `json:"at"`
}

// KeyUse is when a node last saw a key used.
type KeyUse struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// TouchAPIKeys records the last use of keys. A time older than the one a
// key has is ignored, so nodes may report in any order.
type TouchAPIKeys struct {
	Keys []KeyUse `json:"keys"`
}

// Command types of users, invitations and key lifecycle. Append only.
const (
	CreateUserType       MessageType = 20
	UpdateUserType       MessageType = 21
	CreateInvitationType MessageType = 22
	AcceptInvitationType MessageType = 23
	RevokeInvitationType MessageType = 24
	RotateAPIKeyType     MessageType = 25
	TouchAPIKeysType     MessageType = 26
)

// MessageType implementations.
func (*CreateUser) MessageType() MessageType       { return CreateUserType }
func (*UpdateUser) MessageType() MessageType       { return UpdateUserType }
func (*CreateInvitation) MessageType() MessageType { return CreateInvitationType }
func (*AcceptInvitation) MessageType() MessageType { return AcceptInvitationType }
func (*RevokeInvitation) MessageType() MessageType { return RevokeInvitationType }
func (*RotateAPIKey) MessageType() MessageType     { return RotateAPIKeyType }
func (*TouchAPIKeys) MessageType() MessageType     { return TouchAPIKeysType }

// checkRole checks a required role.
func checkRole(field string, r Role) error {
	if !r.Valid() {
		return invalid("%s %q is not a known role (superadmin, tenant_admin, operator, viewer)", field, r)
	}
	return nil
}

// checkUser checks a new user.
func checkUser(u *User) error {
	return firstError(checkID("user.id", u.ID), checkID("user.tenant_id", u.TenantID),
		ValidEmail(u.Email), checkRole("user.role", u.Role), validText("user.created_by", u.CreatedBy, MaxNameLen, ""))
}

// checkKey checks a new key.
func checkKey(field string, k *APIKey) error {
	if err := checkScopes(field, k.Scopes); err != nil {
		return err
	}
	if len(k.Hash) != 32 {
		return invalid("%s.hash must be a SHA-256 (32 bytes)", field)
	}
	return firstError(checkID(field+".id", k.ID), checkID(field+".tenant_id", k.TenantID),
		checkRole(field+".role", k.Role), validText(field+".user", k.User, MaxNameLen, ""),
		validText(field+".name", k.Name, MaxNameLen, ""))
}

// checkScopes checks a key's scopes: names, none repeated. Whether they
// are permissions is the server's to check; Apply does not rely on it.
func checkScopes(field string, scopes []string) error {
	if len(scopes) > MaxScopes {
		return invalid("%s.scopes: at most %d scopes", field, MaxScopes)
	}
	for i, s := range scopes {
		if s == "" || len(s) > 64 || slices.Contains(scopes[:i], s) {
			return invalid("%s.scopes[%d] %q is empty, too long or repeated", field, i, s)
		}
	}
	return nil
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Validate implements Validator.
func (c *CreateUser) Validate() error {
	var key error
	if c.Key != nil {
		key = checkKey("key", c.Key)
		if key == nil && (c.Key.UserID != c.User.ID || c.Key.TenantID != c.User.TenantID) {
			key = invalid("key must belong to the user it is created with")
		}
	}
	return checkAll(c, checkUser(&c.User), key)
}

// Validate implements Validator.
func (c *UpdateUser) Validate() error {
	var role error
	if c.Role != "" {
		role = checkRole("role", c.Role)
	}
	if c.Role == "" && c.Disabled == nil {
		role = invalid("nothing to update: give a role or disabled")
	}
	return checkAll(c, checkID("id", c.ID), role)
}

// Validate implements Validator.
func (c *CreateInvitation) Validate() error {
	inv := c.Invitation
	var rule error
	switch {
	case len(inv.Hash) != 32:
		rule = invalid("invitation.hash must be a SHA-256 (32 bytes)")
	case !inv.ExpiresAt.After(inv.CreatedAt):
		rule = invalid("invitation.expires_at must be after its created_at")
	case !inv.AcceptedAt.IsZero() || inv.UserID != "" || inv.Revoked:
		rule = invalid("a new invitation is neither accepted nor revoked")
	}
	return checkAll(c, checkID("invitation.id", inv.ID), checkID("invitation.tenant_id", inv.TenantID),
		ValidEmail(inv.Email), checkRole("invitation.role", inv.Role), rule)
}

// Validate implements Validator.
func (c *AcceptInvitation) Validate() error {
	var rule error
	if c.Key.UserID != c.User.ID {
		rule = invalid("key must belong to the new user")
	}
	return checkAll(c, checkID("invitation_id", c.InvitationID), checkID("user.id", c.User.ID),
		checkKey("key", &c.Key), rule)
}

// Validate implements Validator.
func (c *RevokeInvitation) Validate() error {
	return checkAll(c, checkID("id", c.ID))
}

// Validate implements Validator.
func (c *RotateAPIKey) Validate() error {
	var rule error
	switch {
	case c.Grace < 0 || time.Duration(c.Grace) > MaxGrace:
		rule = invalid("grace must be between 0 and %s", MaxGrace)
	case c.Key.ID == c.ID:
		rule = invalid("a key's successor needs a new ID")
	}
	return checkAll(c, checkID("id", c.ID), checkKey("key", &c.Key), rule)
}

// Validate implements Validator.
func (c *TouchAPIKeys) Validate() error {
	if len(c.Keys) == 0 || len(c.Keys) > MaxTouches {
		return invalid("keys: between 1 and %d", MaxTouches)
	}
	for i, k := range c.Keys {
		if err := checkID("keys["+strconv.Itoa(i)+"].id", k.ID); err != nil {
			return err
		}
	}
	return checkAll(c)
}

// loadUsers fills the memory of users, their email index and
// invitations from st.
func (f *FSM) loadUsers(st *State) {
	f.users = make(map[string]*User, len(st.Users))
	f.emails = make(map[string]string, len(st.Users))
	f.invites = make(map[string]*Invitation, len(st.Invitations))
	for _, u := range st.Users {
		f.users[u.ID] = u
		f.emails[EmailKey(u.Email)] = u.ID
	}
	for _, inv := range st.Invitations {
		f.invites[inv.ID] = inv
	}
}

// User returns a user by ID.
func (f *FSM) User(id string) (*User, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	u, ok := f.users[id]
	return u, ok
}

// UserByEmail returns a user by email, compared case-insensitively.
func (f *FSM) UserByEmail(email string) (*User, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	u, ok := f.users[f.emails[EmailKey(email)]]
	return u, ok
}

// Users returns the users of a tenant ("" for all), sorted by email.
func (f *FSM) Users(tenantID string) []*User {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*User
	for _, u := range f.users {
		if tenantID == "" || u.TenantID == tenantID {
			out = append(out, u)
		}
	}
	slices.SortFunc(out, func(a, b *User) int { return strings.Compare(EmailKey(a.Email), EmailKey(b.Email)) })
	return out
}

// APIKeys returns the keys of a tenant ("" for all) and, if userID is
// set, of that user only, sorted by ID.
func (f *FSM) APIKeys(tenantID, userID string) []*APIKey {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*APIKey
	for _, k := range f.keys {
		if (tenantID == "" || k.TenantID == tenantID) && (userID == "" || k.UserID == userID) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b *APIKey) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Invitation returns an invitation by ID.
func (f *FSM) Invitation(id string) (*Invitation, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	inv, ok := f.invites[id]
	return inv, ok
}

// Invitations returns the invitations of a tenant ("" for all), sorted by
// ID.
func (f *FSM) Invitations(tenantID string) []*Invitation {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*Invitation
	for _, inv := range f.invites {
		if tenantID == "" || inv.TenantID == tenantID {
			out = append(out, inv)
		}
	}
	slices.SortFunc(out, func(a, b *Invitation) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// putUser stores a new or changed user and indexes its email.
func (f *FSM) putUser(u *User, b *batchBuilder) {
	f.users[u.ID] = u
	f.emails[EmailKey(u.Email)] = u.ID
	b.put(UserKind, u)
}

// putKey stores a new or changed key.
func (f *FSM) putKey(k *APIKey, b *batchBuilder) {
	f.keys[k.ID] = k
	b.put(APIKeyKind, k)
}

// newUserRefusal returns why user u cannot be created now, or nil.
func (f *FSM) newUserRefusal(u *User) *Error {
	if _, ok := f.users[u.ID]; ok {
		return Errorf(CodeAlreadyExists, "user %q already exists", u.ID)
	}
	if _, ok := f.emails[EmailKey(u.Email)]; ok {
		return Errorf(CodeAlreadyExists, "a user with email %s already exists", u.Email)
	}
	if _, ok := f.tenants[u.TenantID]; !ok {
		return Errorf(CodeNotFound, "tenant %q does not exist", u.TenantID)
	}
	return nil
}

// keyOfUser completes k, a new key of user u, with the user's tenant and
// role, at index.
func keyOfUser(k APIKey, u *User, index uint64) *APIKey {
	k.UserID, k.TenantID, k.Role = u.ID, u.TenantID, u.Role
	if k.User == "" {
		k.User = u.Email
	}
	k.Revoked, k.LastUsedAt, k.RotatedTo = false, time.Time{}, ""
	k.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	return &k
}

func (f *FSM) applyCreateUser(index uint64, c *CreateUser, b *batchBuilder) any {
	if old, ok := f.users[c.User.ID]; ok && old.ModifyIndex >= index {
		return old
	}
	if err := f.newUserRefusal(&c.User); err != nil {
		return err
	}
	if c.First && len(f.keys) > 0 {
		return Errorf(CodeAlreadyExists, "the cluster is already initialized")
	}
	if c.Key != nil {
		if _, ok := f.keys[c.Key.ID]; ok {
			return Errorf(CodeAlreadyExists, "api key %q already exists", c.Key.ID)
		}
	}
	u := c.User
	u.CreatedAt = f.at(u.CreatedAt)
	u.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	f.putUser(&u, b)
	if c.Key != nil {
		k := keyOfUser(*c.Key, &u, index)
		k.CreatedAt = f.at(k.CreatedAt)
		f.putKey(k, b)
	}
	return &u
}

func (f *FSM) applyUpdateUser(index uint64, c *UpdateUser, b *batchBuilder) any {
	old, ok := f.users[c.ID]
	if !ok {
		return Errorf(CodeNotFound, "user %q does not exist", c.ID)
	}
	if old.ModifyIndex >= index {
		return old
	}
	u := *old
	if c.Role != "" {
		u.Role = c.Role
	}
	if c.Disabled != nil {
		u.Disabled = *c.Disabled
	}
	u.ModifyIndex = index
	f.putUser(&u, b)
	return &u
}

func (f *FSM) applyCreateInvitation(index uint64, c *CreateInvitation, b *batchBuilder) any {
	if old, ok := f.invites[c.Invitation.ID]; ok {
		if old.ModifyIndex >= index {
			return old
		}
		return Errorf(CodeAlreadyExists, "invitation %q already exists", c.Invitation.ID)
	}
	if _, ok := f.tenants[c.Invitation.TenantID]; !ok {
		return Errorf(CodeNotFound, "tenant %q does not exist", c.Invitation.TenantID)
	}
	if _, ok := f.emails[EmailKey(c.Invitation.Email)]; ok {
		return Errorf(CodeAlreadyExists, "a user with email %s already exists", c.Invitation.Email)
	}
	inv := c.Invitation
	// The lifetime counts from the entry's time, the leader's clock.
	at := f.at(inv.CreatedAt)
	inv.ExpiresAt = at.Add(inv.ExpiresAt.Sub(inv.CreatedAt))
	inv.CreatedAt = at
	inv.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	f.invites[inv.ID] = &inv
	b.put(InvitationKind, &inv)
	return &inv
}

func (f *FSM) applyAcceptInvitation(index uint64, c *AcceptInvitation, b *batchBuilder) any {
	old, ok := f.invites[c.InvitationID]
	if !ok {
		return Errorf(CodeNotFound, "invitation %q does not exist", c.InvitationID)
	}
	if old.ModifyIndex >= index {
		if u, ok := f.users[old.UserID]; ok {
			return u
		}
		return Errorf(CodeInvitationUsed, "the invitation has already been used")
	}
	at := f.at(c.At)
	switch {
	case old.Revoked:
		return Errorf(CodeInvitationRevoked, "the invitation was revoked")
	case !old.AcceptedAt.IsZero():
		return Errorf(CodeInvitationUsed, "the invitation was already used at %s", old.AcceptedAt.Format(time.RFC3339))
	case !at.Before(old.ExpiresAt):
		return Errorf(CodeInvitationExpired, "the invitation expired at %s", old.ExpiresAt.Format(time.RFC3339))
	}
	u := c.User
	u.Email, u.TenantID, u.Role, u.CreatedBy, u.Disabled = old.Email, old.TenantID, old.Role, old.CreatedBy, false
	if err := f.newUserRefusal(&u); err != nil {
		return err
	}
	if _, ok := f.keys[c.Key.ID]; ok {
		return Errorf(CodeAlreadyExists, "api key %q already exists", c.Key.ID)
	}
	u.CreatedAt = at
	u.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	f.putUser(&u, b)
	k := keyOfUser(c.Key, &u, index)
	k.CreatedAt = at
	f.putKey(k, b)
	inv := *old
	inv.AcceptedAt, inv.UserID, inv.ModifyIndex = at, u.ID, index
	f.invites[inv.ID] = &inv
	b.put(InvitationKind, &inv)
	return &u
}

func (f *FSM) applyRevokeInvitation(index uint64, c *RevokeInvitation, b *batchBuilder) any {
	old, ok := f.invites[c.ID]
	if !ok {
		return Errorf(CodeNotFound, "invitation %q does not exist", c.ID)
	}
	if old.ModifyIndex >= index || old.Revoked {
		return old
	}
	if !old.AcceptedAt.IsZero() {
		return Errorf(CodeInvalidTransition, "invitation %s was already used", old.ID)
	}
	inv := *old
	inv.Revoked, inv.ModifyIndex = true, index
	f.invites[inv.ID] = &inv
	b.put(InvitationKind, &inv)
	return &inv
}

func (f *FSM) applyRotateAPIKey(index uint64, c *RotateAPIKey, b *batchBuilder) any {
	old, ok := f.keys[c.ID]
	if !ok {
		return Errorf(CodeNotFound, "api key %q does not exist", c.ID)
	}
	if old.ModifyIndex >= index {
		if k, ok := f.keys[old.RotatedTo]; ok {
			return k
		}
		return old
	}
	at := f.at(c.At)
	switch {
	case old.Revoked:
		return Errorf(CodeInvalidTransition, "api key %s is revoked", old.ID)
	case old.RotatedTo != "":
		return Errorf(CodeInvalidTransition, "api key %s was already rotated (to %s)", old.ID, old.RotatedTo)
	case !old.ExpiresAt.IsZero() && !at.Before(old.ExpiresAt):
		return Errorf(CodeInvalidTransition, "api key %s has expired", old.ID)
	}
	if _, ok := f.keys[c.Key.ID]; ok {
		return Errorf(CodeAlreadyExists, "api key %q already exists", c.Key.ID)
	}
	k := c.Key
	k.UserID, k.TenantID, k.Role, k.User = old.UserID, old.TenantID, old.Role, old.User
	k.Scopes, k.Name, k.RotatedFrom = slices.Clone(old.Scopes), old.Name, old.ID
	k.Revoked, k.LastUsedAt, k.RotatedTo = false, time.Time{}, ""
	k.CreatedAt = at
	k.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	o := *old
	until := at.Add(time.Duration(c.Grace))
	if o.ExpiresAt.IsZero() || until.Before(o.ExpiresAt) {
		o.ExpiresAt = until
	}
	o.RotatedTo, o.ModifyIndex = k.ID, index
	f.putKey(&o, b)
	f.putKey(&k, b)
	return &k
}

func (f *FSM) applyTouchAPIKeys(index uint64, c *TouchAPIKeys, b *batchBuilder) any {
	for _, use := range c.Keys {
		old, ok := f.keys[use.ID]
		if !ok || old.ModifyIndex >= index || !use.At.After(old.LastUsedAt) {
			continue
		}
		k := *old
		k.LastUsedAt, k.ModifyIndex = use.At, index
		f.putKey(&k, b)
	}
	return nil
}
