package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// resendable lists the commands that Apply sends again, to the new leader,
// when leadership changed while they were in flight (ErrUnknownOutcome):
// applying one of them twice answers the second time as the first did and
// changes nothing more. A command not listed fails with ErrUnknownOutcome
// instead; docs/operations.md lists both kinds.
//
//   - SubmitJob: its job ID is stamped by the edge; a second apply of the
//     same submission (same tenant, spec and retry-of) answers with the
//     job the first created (fsm applySubmitJob). If that job finished
//     before the resend arrived, the FSM (which keeps only active jobs in
//     memory) refuses the resend with already_exists; the edge that
//     stamped the ID knows it is its own and answers with the job
//     (server resentOwn).
//   - RevokeAPIKey, RevokeWorkerToken, RevokeInvitation, MarkWorkerDown,
//     DrainWorker: a second apply finds the state already set and answers
//     with the object.
//   - UpdateTenant, UpdateUser: they set values, not add to them.
//   - RegisterWorker: the same registration (same incarnation) again is
//     an update to the same values.
//   - TouchAPIKeys: a use time not after the recorded one is skipped.
//
// A resent command that the first try did apply is in the log twice, and
// so is its audit record: the second one records a call that changed
// nothing. New command types are not resendable until listed here.
//
// Not resendable, because a second apply answers differently or records
// twice: creates with a caller-chosen name (CreateTenant, CreateUser,
// CreateAPIKey, CreateInvitation, CreateWorkerToken, AcceptInvitation,
// RotateAPIKey), job transitions (CancelJob, PauseJob, ResumeJob and the
// leader's and workers' own), DeleteTenant, AdoptOrphans and RecordAudit.
var resendable = map[fsm.MessageType]bool{
	fsm.SubmitJobType:         true,
	fsm.RevokeAPIKeyType:      true,
	fsm.RevokeWorkerTokenType: true,
	fsm.RevokeInvitationType:  true,
	fsm.WorkerDownType:        true,
	fsm.DrainWorkerType:       true,
	fsm.UpdateTenantType:      true,
	fsm.UpdateUserType:        true,
	fsm.RegisterWorkerType:    true,
	fsm.TouchAPIKeysType:      true,
}

// Resendable reports whether Apply sends the encoded command data again
// to a new leader when its outcome is unknown.
func Resendable(data []byte) bool {
	c, err := fsm.DecodeCommand(data)
	return err == nil && resendable[c.MessageType()]
}

// resend reports whether Apply should send data again after err: the
// outcome is unknown and a second apply is harmless. The new leader then
// answers for both.
func resend(err error, data []byte) bool {
	return errors.Is(err, ErrUnknownOutcome) && Resendable(data)
}

// noteResend records that a write's outcome was unknown and it will be
// sent again: the first time, the hold for a leader starts anew (the
// write may have waited for most of it already). It returns the first
// unknown outcome, which heldError reports if no leader answers in time.
func (n *Node) noteResend(first, err error, hold *leaderHold) error {
	n.metrics.resent.Inc()
	n.log.Info("leadership changed with a write in flight; sending it to the new leader", "error", err)
	if first != nil {
		return first
	}
	hold.restart()
	return err
}

// writeHoldMax bounds how long a write waits in all while leadership
// keeps changing (see leaderHold).
const writeHoldMax = 3 * writeHold

// leaderHold is how long a write that found no leader waits for one:
// writeHold without a leader. Each leader of a newer term that this node
// sees starts the hold anew, up to writeHoldMax after the write came.
// A leader can last less than a write's hold: in a rolling restart one
// node is always down, and a leader whose only other reachable voter
// stalls for longer than Raft's leader lease (CPU, disk or GC pressure)
// steps down, so that a few elections may follow each other while the
// write waits; none of them leaves the cluster without a leader for
// writeHold, which the write rides out as it rides out one election.
// /ready's grace (Server's ReadyGrace) counts the same way, from the last
// loss of a leader.
type leaderHold struct {
	// hold and max are writeHold and writeHoldMax (shorter in tests).
	hold, max time.Duration
	// leader reports the current term and whether a leader is known.
	leader func() (term uint64, known bool)
	timer  *time.Timer
	term   uint64    // the term that started the hold last
	ends   time.Time // when the timer fires
	until  time.Time // start + max
}

func (n *Node) newHold() *leaderHold {
	return startHold(writeHold, writeHoldMax, func() (uint64, bool) {
		addr, _ := n.Leader()
		return n.raft.CurrentTerm(), addr != "" || n.IsLeader()
	})
}

func startHold(hold, max time.Duration, leader func() (uint64, bool)) *leaderHold {
	now := time.Now()
	h := &leaderHold{hold: hold, max: max, leader: leader, timer: time.NewTimer(hold), ends: now.Add(hold), until: now.Add(max)}
	h.term, _ = leader()
	return h
}

// expired fires when the hold has run out.
func (h *leaderHold) expired() <-chan time.Time { return h.timer.C }

// renew starts the hold anew if a leader of a newer term than the one
// that started it last is known now.
func (h *leaderHold) renew() {
	if term, known := h.leader(); known && term > h.term {
		h.term = term
		h.restart()
	}
}

// restart starts the hold anew (not past h.until).
func (h *leaderHold) restart() {
	h.ends = time.Now().Add(h.hold)
	if h.ends.After(h.until) {
		h.ends = h.until
	}
	h.timer.Reset(time.Until(h.ends))
}

func (h *leaderHold) stop() { h.timer.Stop() }

// heldError is Apply's answer when it stops waiting for a leader: if a
// resent write's first try may have been applied, its outcome is still
// unknown, whatever stopped the wait, and only that is wrapped (a caller
// must not read it as "nothing applied").
func heldError(unknown, err error) error {
	if unknown != nil {
		return fmt.Errorf("apply: %w (then: %v)", unknown, err)
	}
	return fmt.Errorf("apply: %w", err)
}

// failedAfter is Apply's answer when a try fails for good with err: after
// an unknown outcome, the outcome is still unknown.
func failedAfter(unknown, err error) error {
	if unknown != nil {
		return heldError(unknown, err)
	}
	return err
}
