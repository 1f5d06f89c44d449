package cluster

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// nodeMetrics are the node's Raft metrics. Gauges are read from Raft at
// scrape time; leader changes are counted from Raft's observations.
type nodeMetrics struct {
	apply prometheus.Histogram
	// batchItems observes the submits of each batch entry this node
	// proposes (the group commit's batch size).
	batchItems prometheus.Histogram
	// forwardItems observes the writes of each /rpc/apply-many call this
	// node sends as a follower (forward.go).
	forwardItems  prometheus.Histogram
	resent        prometheus.Counter
	leaderChanges atomic.Uint64
}

var (
	raftStateDesc    = prometheus.NewDesc("ffrtmp_raft_state", "1 for this node's current Raft state.", []string{"state"}, nil)
	raftTermDesc     = prometheus.NewDesc("ffrtmp_raft_term", "Current Raft term.", nil, nil)
	raftCommitDesc   = prometheus.NewDesc("ffrtmp_raft_commit_index", "Raft commit index known to this node.", nil, nil)
	raftAppliedDesc  = prometheus.NewDesc("ffrtmp_raft_applied_index", "Raft index applied on this node.", nil, nil)
	raftLastLogDesc  = prometheus.NewDesc("ffrtmp_raft_last_log_index", "Last index in this node's Raft log.", nil, nil)
	raftPeersDesc    = prometheus.NewDesc("ffrtmp_raft_voters", "Voters in the Raft configuration.", nil, nil)
	raftLeaderDesc   = prometheus.NewDesc("ffrtmp_raft_leader_changes_total", "Leader changes observed by this node.", nil, nil)
	raftSnapshotDesc = prometheus.NewDesc("ffrtmp_raft_snapshot_bytes", "Size of the newest Raft snapshot.", nil, nil)
	raftSnapIdxDesc  = prometheus.NewDesc("ffrtmp_raft_snapshot_index", "Index of the newest Raft snapshot.", nil, nil)
	portConnsDesc    = prometheus.NewDesc("ffrtmp_node_port_connections_total",
		"Connections accepted on the node port after their TLS handshake, by caller (server or worker).", []string{"caller"}, nil)
	portFailedDesc = prometheus.NewDesc("ffrtmp_node_port_handshake_failures_total",
		"Connections to the node port that failed their TLS handshake or protocol byte.", nil, nil)
)

func (m *nodeMetrics) init(n *Node) {
	m.apply = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ffrtmp_raft_apply_seconds",
		Help:    "Time to commit and apply a write proposed on this node (forwarding included).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	m.batchItems = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ffrtmp_raft_submit_batch_items",
		Help:    "Submits per batch entry proposed by this node (group commit).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11),
	})
	m.forwardItems = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ffrtmp_raft_forward_batch_items",
		Help:    "Writes per call this follower forwarded to the leader (batched forwarding).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	})
	m.resent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ffrtmp_raft_apply_resent_total",
		Help: "Writes sent again to a new leader because leadership changed while they were in flight.",
	})
	obs := make(chan raft.Observation, 16)
	n.raft.RegisterObserver(raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	}))
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			select {
			case <-n.stop:
				return
			case o := <-obs:
				m.leaderChanges.Add(1)
				n.noteLeader(o.Data.(raft.LeaderObservation).LeaderAddr != "", time.Now())
			}
		}
	}()
	if n.cfg.Metrics != nil {
		n.cfg.Metrics.MustRegister(m.apply, m.batchItems, m.forwardItems, m.resent, &raftCollector{n: n})
	}
}

type raftCollector struct{ n *Node }

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{raftStateDesc, raftTermDesc, raftCommitDesc, raftAppliedDesc,
		raftLastLogDesc, raftPeersDesc, raftLeaderDesc, raftSnapshotDesc, raftSnapIdxDesc, portConnsDesc, portFailedDesc} {
		ch <- d
	}
}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	st := n.raft.Stats()
	u := func(k string) float64 { v, _ := strconv.ParseUint(st[k], 10, 64); return float64(v) }
	cur := n.raft.State()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == cur {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(raftStateDesc, prometheus.GaugeValue, v, s.String())
	}
	ch <- prometheus.MustNewConstMetric(raftTermDesc, prometheus.GaugeValue, u("term"))
	ch <- prometheus.MustNewConstMetric(raftCommitDesc, prometheus.GaugeValue, float64(n.raft.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(raftAppliedDesc, prometheus.GaugeValue, float64(n.raft.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(raftLastLogDesc, prometheus.GaugeValue, u("last_log_index"))
	ch <- prometheus.MustNewConstMetric(raftPeersDesc, prometheus.GaugeValue, u("num_peers")+1)
	ch <- prometheus.MustNewConstMetric(raftLeaderDesc, prometheus.CounterValue, float64(n.metrics.leaderChanges.Load()))
	for _, who := range []caller{callerServer, callerWorker} {
		ch <- prometheus.MustNewConstMetric(portConnsDesc, prometheus.CounterValue, float64(n.mux.accepted[who].Load()), who.String())
	}
	ch <- prometheus.MustNewConstMetric(portFailedDesc, prometheus.CounterValue, float64(n.mux.handshakeFailures.Load()))
	if list, err := n.snaps.List(); err == nil && len(list) > 0 {
		ch <- prometheus.MustNewConstMetric(raftSnapshotDesc, prometheus.GaugeValue, float64(list[0].Size))
		ch <- prometheus.MustNewConstMetric(raftSnapIdxDesc, prometheus.GaugeValue, float64(list[0].Index))
	}
}
