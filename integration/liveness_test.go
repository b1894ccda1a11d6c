package integration

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/quarantine-watch/quarantine-watch/consumer"
	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// TestRestartFencesPredecessorAtOnce: an instance died between its offset
// commit and its EndTxn, leaving its transaction open with offsets in it.
// Until that transaction ends the group's offsets are unstable: an offset
// fetch with require_stable (every franz-go group member's) answers
// UNSTABLE_OFFSET_COMMIT. Its restart, with the same transactional id and
// the default flags, must abort that transaction at once by initialising
// its producer id at start-up, and consume; an instance that waited for
// its first poll to do so would wait out the dead one's transaction
// timeout (60 s by default).
//
// The predecessor is written with raw requests, so that it stops exactly
// after TxnOffsetCommit: AddPartitionsToTxn and a produced (uncommitted)
// record on the alerts topic, AddOffsetsToTxn, TxnOffsetCommit, and no
// EndTxn.
func TestRestartFencesPredecessorAtOnce(t *testing.T) {
	b, p, adm := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	w := newSourceWriter(t, b, p.source)
	exp := newExpected()
	g := generate(cloudtrailgen.New(cloudtrailgen.Config{Seed: 61, QuarantineRate: 0.02, NearMissRate: 0.05}), 600)
	rs, err := w.write(ctx, g.values, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp.add(rs, g, false)

	txnID := kafkatest.Name(t, "txn")
	const txnTimeout = consumer.DefaultSessionTimeout + consumer.TransactionTimeoutMargin // the service's default
	versions := kversion.Stable()
	versions.SetMaxKeyVersion(int16(kmsg.EndTxn), 4) // transactions v1, as the service speaks
	versions.SetMaxKeyVersion(int16(kmsg.TxnOffsetCommit), 4)
	dead := newClient(t, b, kgo.TransactionalID(txnID), kgo.TransactionTimeout(txnTimeout), kgo.MaxVersions(versions))
	if err := dead.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := dead.ProduceSync(ctx, &kgo.Record{Topic: p.alerts, Key: []byte("from-the-dead-predecessor"), Value: []byte("{}")}).FirstErr(); err != nil {
		t.Fatalf("predecessor: producing: %v", err)
	}
	pid, epoch, err := dead.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = txnID, pid, epoch, p.group
	addResp, err := add.RequestWith(ctx, dead)
	if err == nil {
		err = kerr.ErrorForCode(addResp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("predecessor: AddOffsetsToTxn: %v", err)
	}
	commit := kmsg.NewPtrTxnOffsetCommitRequest()
	commit.TransactionalID, commit.Group, commit.ProducerID, commit.ProducerEpoch = txnID, p.group, pid, epoch
	commit.Generation, commit.MemberID = -1, ""
	ct := kmsg.NewTxnOffsetCommitRequestTopic()
	ct.Topic = p.source
	for part := range int32(sourcePartitions) {
		cp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		cp.Partition, cp.Offset, cp.LeaderEpoch = part, 10, -1
		ct.Partitions = append(ct.Partitions, cp)
	}
	commit.Topics = append(commit.Topics, ct)
	commitResp, err := commit.RequestWith(ctx, dead)
	if err != nil {
		t.Fatalf("predecessor: TxnOffsetCommit: %v", err)
	}
	for _, rt := range commitResp.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				t.Fatalf("predecessor: TxnOffsetCommit %s[%d]: %v", rt.Topic, rp.Partition, err)
			}
		}
	}
	dead.Close() // connections gone, no EndTxn: the process died
	died := time.Now()
	if d := describeTxn(ctx, adm, txnID); d.State != "Ongoing" {
		t.Fatalf("the predecessor's transaction is %s, want Ongoing: the set-up did not leave it open", d.State)
	}

	in := startInstance(t, "restarted", txnID, serviceArgs(b, p.source, p.alerts, p.group))
	started := time.Now()
	waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, in)
	took := time.Since(started)
	t.Logf("the restarted instance committed the end of the source %v after it started (%v after the predecessor died; its transaction timeout is %v)",
		took.Round(time.Millisecond), time.Since(died).Round(time.Millisecond), txnTimeout)
	if took > txnTimeout/2 {
		t.Errorf("took %v to consume, want well under the predecessor's transaction timeout %v: the restart waited for it to time out instead of fencing it",
			took.Round(time.Millisecond), txnTimeout)
	}
	if d := describeTxn(ctx, adm, txnID); d.ProducerEpoch <= epoch {
		t.Errorf("transactional id %s is at epoch %d, want above the predecessor's %d", txnID, d.ProducerEpoch, epoch)
	}
	stopAll(t, in)
	checkUnplanned(t, in)
	drainOutputs(t, b, p, exp)
}

// TestShutdownMidTransactionAbortsAtOnce sends SIGTERM to an instance whose
// transaction cannot end within the shutdown budget, on a broker with
// Kafka's default abort sweep (every 10 s; the package's broker sweeps
// every 500 ms, which hides a transaction left open). The instance is made
// to hang in End the way production does: another instance is SIGKILLed
// and restarted, the restart joins at once, and the join, and with it
// every commit of the survivor (End waits for a heartbeat), waits for the
// dead process's session to expire: 45 s by default, more than the 20 s
// shutdown budget. The survivor must exit within --shutdown-timeout with
// its transaction aborted, not left open for the broker to time out
// (transaction timeout plus sweep) while read_committed readers of the
// partitions it wrote, and the next owner of its offsets, wait.
func TestShutdownMidTransactionAbortsAtOnce(t *testing.T) {
	if os.Getenv(kafkatest.EnvBrokers) != "" {
		t.Skipf("needs a broker with Kafka's default abort sweep; %s names an existing cluster", kafkatest.EnvBrokers)
	}
	b := kafkatest.StartForTest(t, kafkatest.Options{Env: map[string]string{
		// Kafka's default (10 s), not the package's 500 ms.
		"KAFKA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "",
	}})
	p := newPipeline(t)
	adm := newAdmin(t, b)
	p.create(t, b, adm, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 67, QuarantineRate: 0.05, NearMissRate: 0.05})
	stream := startStream(ctx, t, b, p.source, gen, 50, 50*time.Millisecond, 200_000)
	txnA := kafkatest.Name(t, "txn-a")
	a := startInstance(t, "a", txnA, serviceArgs(b, p.source, p.alerts, p.group))
	other := startInstance(t, "b", kafkatest.Name(t, "txn-b"), serviceArgs(b, p.source, p.alerts, p.group))
	waitGroup(t, adm, p.group, "a and b share the partitions", func(g kadm.DescribedGroup) bool {
		return g.State == "Stable" && len(g.Members) == 2 && assigned(g.Members[0], p.source) > 0 && assigned(g.Members[1], p.source) > 0
	})
	// a must be consuming: the group is stable while a still starts up,
	// and a member whose first transaction only writes the watch's
	// markers, killed around, asks the group for its positions instead of
	// hanging in End with its records' transaction open.
	for deadline := time.Now().Add(time.Minute); describeTxn(ctx, adm, txnA).State != "CompleteCommit"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a committed no transaction within a minute of the group forming")
		}
	}
	killed := time.Now()
	other.kill(t)

	// a's transaction is stuck once it stays Ongoing, with one start time,
	// for 3 s: its transactions otherwise last a poll's worth of records.
	var stuck kadm.DescribedTransaction
	since := time.Now()
	for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		d := describeTxn(ctx, adm, txnA)
		if d.State != "Ongoing" || d.StartTimestamp != stuck.StartTimestamp {
			stuck, since = d, time.Now()
		} else if time.Since(since) > 3*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's transaction never hung in the 40 s after b was killed (last state %s)", d.State)
		}
	}
	t.Logf("a's transaction (producer id %d, epoch %d, partitions %v) has been Ongoing for %v, %v after b was killed; SIGTERM to a",
		stuck.ProducerID, stuck.ProducerEpoch, stuck.Topics.Sorted(), time.Since(time.UnixMilli(stuck.StartTimestamp)).Round(time.Millisecond),
		time.Since(killed).Round(time.Millisecond))

	began := time.Now()
	err := a.stop()
	took := time.Since(began)
	after := describeTxn(ctx, adm, txnA)
	t.Logf("a exited %v after SIGTERM (%v); its transactional id is now %s (producer id %d, epoch %d)",
		took.Round(time.Millisecond), err, after.State, after.ProducerID, after.ProducerEpoch)
	if err != nil {
		t.Errorf("a did not exit 0 after SIGTERM: %v", err)
	}
	const budget = consumer.DefaultShutdownTimeout
	if took > budget+3*time.Second {
		t.Errorf("a took %v to stop, over --shutdown-timeout (%v by default; the manifests' grace period is 40 s)", took.Round(time.Millisecond), budget)
	}
	if after.State == "Ongoing" && after.ProducerEpoch == stuck.ProducerEpoch && after.StartTimestamp == stuck.StartTimestamp {
		t.Errorf("a exited with its transaction still open: the broker aborts it only after the transaction timeout and its sweep")
	}

	// What a read_committed reader waits for: the last stable offset of
	// each output partition a's transaction held to reach its end.
	exited := time.Now()
	var held []string
	for _, tp := range stuck.Topics.Sorted() {
		for _, part := range tp.Partitions {
			held = append(held, fmt.Sprintf("%s/%d", tp.Topic, part))
		}
	}
	for {
		stable, err1 := adm.ListCommittedOffsets(ctx, p.alerts, p.dlq)
		ends, err2 := adm.ListEndOffsets(ctx, p.alerts, p.dlq)
		blocked := 0
		if err1 == nil && err2 == nil {
			for _, tp := range stuck.Topics.Sorted() {
				for _, part := range tp.Partitions {
					s, _ := stable.Lookup(tp.Topic, part)
					e, _ := ends.Lookup(tp.Topic, part)
					if s.Offset < e.Offset {
						blocked++
					}
				}
			}
		}
		if err1 == nil && err2 == nil && blocked == 0 {
			break
		}
		if time.Since(exited) > 2*time.Minute {
			t.Fatalf("the output partitions a's transaction held (%v) were still unstable 2 minutes after a exited", held)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waited := time.Since(exited)
	t.Logf("read_committed readers of %v could read on %v after a exited", held, waited.Round(time.Millisecond))
	if waited > 5*time.Second {
		t.Errorf("readers of the outputs waited %v after a exited, for the broker to time out a's transaction", waited.Round(time.Millisecond))
	}

	if err := stream.stop(); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, adm, p.group, p.source, 4*time.Minute, other)
	stopAll(t, other)
	checkUnplanned(t, a, other)
	drainOutputs(t, b, p, stream.expected())
}
