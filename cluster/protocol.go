package cluster

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// The cluster protocol gates command types that an older server could not
// apply (fsm.MinProtocol): such an entry would stop it (an unknown type
// without the skip bit), and skipping it instead would let its state
// diverge. Every node reports the protocol it speaks in its status
// (fsm.Protocol; a binary from before protocols reports none, which
// counts as 1). The leader asks every server of the configuration when
// it takes the lead, every protocolCheck, and at once after it adds a
// server; it proposes a gated command only while all of them answered
// with at least the command's protocol, and refuses it otherwise
// (unknown_command, before the log), so its caller does without. A rolling
// upgrade thus enables a new command once its last server runs the new
// binary. Downgrading a server below the protocol the log already uses is
// not supported: the old binary stops at the first entry it cannot read.

// protocolCheck is how often the leader asks the servers again;
// protocolRetry, while one of them did not answer or speaks an older
// protocol (a node restarting, an upgrade under way).
const (
	protocolCheck = 10 * time.Second
	protocolRetry = time.Second
)

type protocolGate struct {
	// level is the lowest protocol the configuration's servers answered
	// with at the last check; 0 while unknown (not leader, not checked
	// yet, a server did not answer, the configuration just changed).
	level   atomic.Int32
	recheck chan struct{}
}

// watchProtocol keeps the gate's level while this node leads (ctx).
func (n *Node) watchProtocol(ctx context.Context) {
	defer n.proto.level.Store(0)
	for {
		level := n.lowestProtocol(ctx)
		n.proto.level.Store(int32(level))
		wait := protocolCheck
		if level < fsm.Protocol {
			wait = protocolRetry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-n.proto.recheck:
		}
	}
}

// lowestProtocol asks every server of the configuration for its protocol
// and returns the lowest, or 0 if one did not answer.
func (n *Node) lowestProtocol(ctx context.Context) int {
	members, err := n.Members(ctx, true)
	if err != nil || len(members) == 0 {
		return 0
	}
	low := fsm.Protocol
	for _, m := range members {
		if m.Status == nil {
			return 0
		}
		low = min(low, max(m.Status.Protocol, 1))
	}
	return low
}

// recheckProtocol forgets the level and asks the servers again: the
// configuration changed.
func (n *Node) recheckProtocol() {
	n.proto.level.Store(0)
	select {
	case n.proto.recheck <- struct{}{}:
	default:
	}
}

// gate refuses a command whose protocol not every server speaks yet.
func (n *Node) gate(c fsm.Command) error {
	if c == nil {
		return nil
	}
	need := fsm.MinProtocol(c.MessageType())
	if need <= 1 {
		return nil
	}
	if have := int(n.proto.level.Load()); have < need {
		return fsm.Errorf(fsm.CodeUnknownCommand,
			"command type %d needs every server of the cluster to speak protocol %d (known: %d); a server runs an older version or did not answer",
			c.MessageType(), need, have)
	}
	return nil
}
