package integration

import (
	"context"
	"testing"
	"time"

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
	g := generate(cloudtrailgen.New(cloudtrailgen.Config{Seed: 61, QuarantineRate: 0.02, NearMissRate: 0.05, MalformedRate: 0.01}), 600)
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

	in := startInstance(t, "restarted", txnID, defaultArgs(b, p))
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
