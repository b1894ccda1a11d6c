package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// The dense oracle (dense_test.go) on a cluster of three brokers
// (kafkatest.StartCluster: three KRaft voters, three replicas of every
// partition, min.insync.replicas 2, unclean election off), whose brokers
// the test SIGKILLs one at a time, each chosen for what it holds at that
// moment, and restarts. Franz-go and librdkafka fail over on their own; a
// service that exits on any of these faults would crash-loop in
// production through an ordinary broker upgrade.

// clusterRun is a dense run on a cluster and the broker faults done to it.
type clusterRun struct {
	*denseRun
	c                                          *kafkatest.Cluster
	leaderKills, coordinatorKills, quorumKills int
	rollingRestarts                            int
	txnStates                                  map[string]int // where the transaction coordinator kills landed
}

// leaderOf returns a random partition of topic and its leader.
func (r *clusterRun) leaderOf(topic string) (int32, int32) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topics, err := r.adm.ListTopics(ctx, topic)
	if err != nil || topics[topic].Err != nil {
		r.t.Fatalf("listing %s: %v %v", topic, err, topics[topic].Err)
	}
	parts := topics[topic].Partitions.Sorted()
	p := parts[r.rng.IntN(len(parts))]
	return p.Partition, p.Leader
}

// killNode SIGKILLs node id, waits until the cluster has moved its
// leaderships and the group has committed progress records without it,
// then starts it again and waits until every replica is back in sync.
func (r *clusterRun) killNode(id int32, why string, progress int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := r.c.Node(id).Kill(ctx); err != nil {
		r.t.Fatal(err)
	}
	r.step("SIGKILL broker %d, %s", id, why)
	if err := r.c.WaitFailedOver(ctx, id, time.Minute); err != nil {
		r.t.Fatal(err)
	}
	r.step("broker %d fenced, its partitions led by others", id)
	r.freshAdmin()
	r.progress(progress, 2*time.Minute)
	r.step("progress with broker %d down; restarting it", id)
	if err := r.c.Node(id).Restart(ctx); err != nil {
		r.t.Fatal(err)
	}
	if err := r.c.WaitHealthy(ctx, 2*time.Minute); err != nil {
		r.t.Fatal(err)
	}
	r.step("broker %d back (started in %v), every replica in sync", id, r.c.Node(id).StartupTime().Round(time.Millisecond))
}

// freshAdmin replaces the test's admin client once coordinators have
// moved. franz-go (1.22) caches a group's and a transactional id's
// coordinator and, on requests it shards (OffsetFetch, DescribeGroups,
// DescribeTransactions), returns the dial error of a dead coordinator
// without forgetting it: the test's client would ask the dead broker
// until the end of the run. The service is judged by what it commits,
// never through this client's cache.
func (r *clusterRun) freshAdmin() {
	r.adm = newAdmin(r.t, r.c)
}

// killTxnCoordinator SIGKILLs the transaction coordinator of an instance
// the moment DescribeTransactions shows its transaction Ongoing or
// PrepareCommit, preferring the window between the offset commit and the
// transaction's end (inWindow), and restarts it (killNode).
func (r *clusterRun) killTxnCoordinator(progress int) {
	r.t.Helper()
	var ids []string
	for _, n := range r.running {
		ids = append(ids, r.instances[n].txnID)
	}
	var hit kadm.DescribedTransaction
	found := false
	for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline) && !found; {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		txns, err := r.adm.DescribeTransactions(ctx, ids...)
		cancel()
		if err != nil {
			continue
		}
		for _, d := range txns.Sorted() {
			// The window first; after 20 s any open transaction.
			if d.Err == nil && (inWindow(d) || (d.State == "Ongoing" && time.Until(deadline) < 25*time.Second)) {
				hit, found = d, true
				break
			}
		}
	}
	if !found {
		r.t.Fatalf("no transaction of %v seen Ongoing or PrepareCommit within 45 s", ids)
	}
	state := hit.State
	if _, ok := hit.Topics["__consumer_offsets"]; ok {
		state += " with offsets"
	}
	r.txnStates[state]++
	r.coordinatorKills++
	r.killNode(hit.Coordinator, fmt.Sprintf("the transaction coordinator of %s, whose transaction is %s", hit.TxnID, state), progress)
}

// progress waits until the outputs read with read_committed during the
// run (each source record yields one) have grown by n, saying every 15 s
// where the group, the instances' transactions and the writer stand. It
// counts outputs rather than the group's committed offsets (which
// denseRun.progress reads) because, with a broker down, the test's own
// franz-go client can keep asking a dead group coordinator for them (see
// freshAdmin), which says nothing about the service.
func (r *clusterRun) progress(n int, limit time.Duration) {
	r.t.Helper()
	outputs := func() int {
		r.goDuring.mu.Lock()
		defer r.goDuring.mu.Unlock()
		return len(r.goDuring.outs)
	}
	base := outputs()
	began := time.Now()
	next := began.Add(15 * time.Second)
	for outputs()-base < n {
		for _, name := range r.running {
			in := r.instances[name]
			in.mu.Lock()
			failure := in.failure
			in.mu.Unlock()
			if failure != nil {
				r.t.Fatalf("waiting for progress: %v", failure)
			}
		}
		if time.Since(began) > limit {
			r.t.Fatalf("no %d new outputs within %v (%d): %s", n, limit, outputs()-base, r.status())
		}
		if time.Now().After(next) {
			r.t.Logf("waiting for progress (%d of %d outputs): %s", outputs()-base, n, r.status())
			next = time.Now().Add(15 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// status describes the group, the instances' transactions and the writer.
func (r *clusterRun) status() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	total, err := committedTotal(ctx, r.adm, r.p.group, r.p.source)
	fmt.Fprintf(&b, "committed %d (%v); ", total, err)
	groups, err := r.adm.DescribeGroups(ctx, r.p.group)
	if g, ok := groups[r.p.group]; err == nil && ok {
		fmt.Fprintf(&b, "group %s on broker %d with %d members (%v); ", g.State, g.Coordinator.NodeID, len(g.Members), g.Err)
	} else {
		fmt.Fprintf(&b, "group: %v; ", err)
	}
	var ids []string
	for _, n := range r.running {
		ids = append(ids, r.instances[n].txnID)
	}
	txns, err := r.adm.DescribeTransactions(ctx, ids...)
	for _, d := range txns.Sorted() {
		fmt.Fprintf(&b, "txn %s %s on broker %d", d.TxnID, d.State, d.Coordinator)
		if d.StartTimestamp > 0 {
			fmt.Fprintf(&b, " for %v", time.Since(time.UnixMilli(d.StartTimestamp)).Round(time.Second))
		}
		fmt.Fprintf(&b, " (%v); ", d.Err)
	}
	if err != nil {
		fmt.Fprintf(&b, "transactions: %v; ", err)
	}
	r.src.mu.Lock()
	fmt.Fprintf(&b, "writer: %d written, %d errors", r.src.written, len(r.src.errs))
	if len(r.src.errs) > 0 {
		fmt.Fprintf(&b, ", last %s", r.src.errs[len(r.src.errs)-1])
	}
	r.src.mu.Unlock()
	return b.String()
}

// TestExactlyOnceCluster runs the dense oracle on a cluster of three
// brokers with two instances on the service's default flags, while the
// test SIGKILLs, one at a time, the leader of a source partition, the
// leader of an alerts partition, the transaction coordinator of an
// instance whose transaction is open, the group coordinator and the KRaft
// quorum leader, restarting each, and then restarts every broker cleanly
// in turn. Every kill waits until the cluster has failed over and the
// group has made progress without the broker. No exit of the service is
// excused.
func TestExactlyOnceCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("takes minutes; -short skips it")
	}
	c := kafkatest.StartClusterForTest(t, kafkatest.ClusterOptions{})
	// The writer is paced so that it writes through every fault: records
	// is a ceiling, and the run ends the source once the faults are done.
	r := &clusterRun{
		denseRun: startDenseRun(t, c, c.Brokers(), denseSourceConfig{records: 200_000, chunk: 50, abortEvery: 5, every: 100 * time.Millisecond, seed: 1312}),
		c:        c, txnStates: map[string]int{},
	}
	r.step("start a and b; the writer starts")
	r.start("a")
	r.start("b")
	r.src.start()
	r.progress(1000, 3*time.Minute)

	part, leader := r.leaderOf(r.p.source)
	r.leaderKills++
	r.killNode(leader, fmt.Sprintf("the leader of source partition %d", part), 500)

	part, leader = r.leaderOf(r.p.alerts)
	r.leaderKills++
	r.killNode(leader, fmt.Sprintf("the leader of alerts partition %d", part), 500)

	r.killTxnCoordinator(500)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	coords := r.adm.FindGroupCoordinators(ctx, r.p.group)
	cancel()
	gc, ok := coords[r.p.group]
	if !ok || gc.Err != nil {
		t.Fatalf("finding the group coordinator: %v", gc.Err)
	}
	r.coordinatorKills++
	r.killNode(gc.NodeID, "the coordinator of group "+r.p.group, 500)

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	ql, err := c.QuorumLeader(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	r.quorumKills++
	r.killNode(ql, "the KRaft quorum leader", 500)

	r.step("rolling restart")
	for id := int32(1); id <= kafkatest.ClusterSize; id++ {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		if err := c.Node(id).Restart(ctx); err != nil { // SIGTERM, then start
			cancel()
			t.Fatal(err)
		}
		if err := c.WaitHealthy(ctx, 2*time.Minute); err != nil {
			cancel()
			t.Fatal(err)
		}
		cancel()
		r.step("broker %d restarted cleanly, every replica in sync", id)
		r.freshAdmin()
		r.progress(300, 2*time.Minute)
	}
	r.rollingRestarts++

	r.src.endNow()
	res := r.finish(3 * time.Minute)
	ex := r.unplanned()
	for _, e := range ex {
		t.Errorf("unplanned exit: %s: %s", firstLine(e.line), e.cause)
	}
	line := fmt.Sprintf("eos-cluster: records=%d outputs=%d aborted_source=%d leader_kills=%d coordinator_kills=%d quorum_kills=%d rolling_restarts=%d unplanned_exits=%d lost=%d duplicates=%d phantom=%d hanging=%d readers_agree=%t",
		res.records, res.outputs, res.abortedSource, r.leaderKills, r.coordinatorKills, r.quorumKills, r.rollingRestarts, len(ex), res.lost, res.duplicates, res.phantom, res.hanging, res.readersAgree)
	t.Log(line)
	fmt.Println(line)
	t.Logf("transaction coordinator kills landed: %v", r.txnStates)
	if res.records == 0 {
		t.Errorf("the run proves nothing: no record in the source log")
	}
}
