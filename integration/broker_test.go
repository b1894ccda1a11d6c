package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// kafka is the one broker of this package's tests (see kafkatest.Suite).
var kafka kafkatest.Suite

// TestMain builds the quarantine-watch binary once, in the background while
// the first test starts the broker, for the tests that run it as real
// processes (see service_test.go), runs the tests and removes the broker.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "quarantine-watch-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildService(dir)
	code := kafka.Run(m)
	endBuild()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	smokePartitions = 6
	smokeCommitted  = 1000
	smokeAborted    = 100
)

// TestBrokerTransactionsSurviveHardKill proves that the broker does what the
// detector relies on: transactions whose aborted records a read-committed
// consumer never sees, and committed records that survive a SIGKILL of the
// broker. The aborted transaction is written first, into every partition,
// so a consumer that reads every committed record has also gone past every
// aborted one.
func TestBrokerTransactionsSurviveHardKill(t *testing.T) {
	b := kafka.Broker(t)
	// Generous: a broker start takes about 10 s on two idle cores and minutes
	// on a busy machine.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	topic := kafkatest.Name(t, "topic")
	adm := kadm.NewClient(newClient(t, b))
	if _, err := adm.CreateTopic(ctx, smokePartitions, 1, nil, topic); err != nil {
		t.Fatalf("creating topic %s: %v", topic, err)
	}

	producer := newClient(t, b,
		kgo.TransactionalID(kafkatest.Name(t, "txn")),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	produceTxn(ctx, t, producer, topic, "aborted", smokeAborted, kgo.TryAbort)
	produceTxn(ctx, t, producer, topic, "committed", smokeCommitted, kgo.TryCommit)
	producer.Close()

	// Each partition holds its share of both transactions plus one control
	// record (the abort or commit marker) per transaction. This shows that
	// the aborted records were written, so the checks below can fail.
	ends := waitEndOffsets(ctx, t, adm, topic, func(p int32) int64 {
		return share(smokeAborted, p) + 1 + share(smokeCommitted, p) + 1
	})

	got := consumeAll(ctx, t, b, topic, kgo.ReadUncommitted(), ends)
	if n := len(got); n != smokeAborted+smokeCommitted {
		t.Fatalf("read uncommitted: %d records, want %d (aborted and committed)", n, smokeAborted+smokeCommitted)
	}
	before := consumeAll(ctx, t, b, topic, kgo.ReadCommitted(), ends)
	checkCommitted(t, "before the kill", before)

	if b.External() {
		t.Skip("transactions checked; the kill and restart need a broker that kafkatest starts, not KAFKA_BROKERS")
	}
	if err := b.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	// The broker must really be gone, or the rest proves nothing.
	down, downCancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := kadm.NewClient(newClient(t, b)).BrokerMetadata(down); err == nil {
		t.Fatal("the broker still answers after Kill")
	}
	downCancel()
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker back %s after SIGKILL", b.StartupTime().Round(time.Millisecond))

	after := consumeAll(ctx, t, b, topic, kgo.ReadCommitted(), ends)
	checkCommitted(t, "after the kill", after)
	for key, off := range before {
		if after[key] != off {
			t.Errorf("record %s moved from %v to %v across the restart", key, off, after[key])
		}
	}

	// The transaction coordinator recovered too: a new producer with a new
	// transactional id commits.
	again := newClient(t, b,
		kgo.TransactionalID(kafkatest.Name(t, "txn-after")),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	produceTxn(ctx, t, again, topic, "after", smokePartitions, kgo.TryCommit)
}

// cluster is what most helpers need of the Kafka they talk to: the
// package's broker (kafkatest.Broker) or a cluster of three
// (kafkatest.Cluster).
type cluster interface {
	// Brokers returns seed addresses.
	Brokers() []string
	// External reports a cluster named by KAFKA_BROKERS, whose topics the
	// tests must delete.
	External() bool
}

func newClient(t *testing.T, b cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.Brokers()...)}, opts...)...)
	if err != nil {
		t.Fatalf("creating client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// share is how many of n records, spread i%smokePartitions, land in
// partition p.
func share(n int, p int32) int64 {
	s := n / smokePartitions
	if int(p) < n%smokePartitions {
		s++
	}
	return int64(s)
}

// produceTxn writes n records "kind-i" to partition i%smokePartitions in one
// transaction and ends it with commit.
func produceTxn(ctx context.Context, t *testing.T, cl *kgo.Client, topic, kind string, n int, commit kgo.TransactionEndTry) {
	t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatalf("%s: beginning transaction: %v", kind, err)
	}
	rs := make([]*kgo.Record, n)
	for i := range rs {
		rs[i] = &kgo.Record{
			Topic:     topic,
			Partition: int32(i % smokePartitions),
			Key:       fmt.Appendf(nil, "%s-%d", kind, i),
			Value:     fmt.Appendf(nil, `{"kind":%q,"i":%d}`, kind, i),
		}
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("%s: producing: %v", kind, err)
	}
	if err := cl.EndTransaction(ctx, commit); err != nil {
		t.Fatalf("%s: ending transaction (commit=%v): %v", kind, commit, err)
	}
}

// waitEndOffsets waits until every partition of topic ends at want(p) and
// returns the end offsets. EndTransaction returns before the broker has
// written the commit or abort markers, so the last marker may still be on
// its way.
func waitEndOffsets(ctx context.Context, t *testing.T, adm *kadm.Client, topic string, want func(int32) int64) kadm.ListedOffsets {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		var wrong []string
		if err == nil {
			ends.Each(func(o kadm.ListedOffset) {
				if o.Err != nil || o.Offset != want(o.Partition) {
					wrong = append(wrong, fmt.Sprintf("partition %d ends at %d (err %v), want %d", o.Partition, o.Offset, o.Err, want(o.Partition)))
				}
			})
			if len(ends[topic]) != smokePartitions {
				wrong = append(wrong, fmt.Sprintf("%d partitions listed, want %d", len(ends[topic]), smokePartitions))
			}
		}
		if err == nil && len(wrong) == 0 {
			return ends
		}
		select {
		case <-ctx.Done():
			t.Fatalf("end offsets of %s: %v %v", topic, err, wrong)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type position struct {
	partition int32
	offset    int64
}

// consumeAll reads topic from the start with the given isolation level until
// it has seen every data record below the end offsets, which it knows it has
// once it has seen the last one in each partition (the record just before
// the final commit marker). It returns each key's position and fails the
// test on a repeated key.
func consumeAll(ctx context.Context, t *testing.T, b *kafkatest.Broker, topic string, level kgo.IsolationLevel, ends kadm.ListedOffsets) map[string]position {
	t.Helper()
	// Missing records would otherwise be waited for until the test's deadline.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cl := newClient(t, b,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(level),
	)
	defer cl.Close()

	last := map[int32]int64{} // partition -> offset of its last data record
	ends.Each(func(o kadm.ListedOffset) { last[o.Partition] = o.Offset - 2 })
	got := map[string]position{}
	for len(last) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consuming %s: %v; %d records so far, partitions not read to the end: %v", topic, err, len(got), last)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("consuming %s[%d]: %v", topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			key := string(r.Key)
			if prev, dup := got[key]; dup {
				t.Errorf("key %s read twice: at %v and at %d/%d", key, prev, r.Partition, r.Offset)
			}
			got[key] = position{r.Partition, r.Offset}
			if r.Offset >= last[r.Partition] {
				delete(last, r.Partition)
			}
		})
	}
	return got
}

// checkCommitted checks that got holds exactly the committed records.
func checkCommitted(t *testing.T, when string, got map[string]position) {
	t.Helper()
	if len(got) != smokeCommitted {
		t.Errorf("%s: read committed returned %d records, want %d", when, len(got), smokeCommitted)
	}
	for key := range got {
		if !strings.HasPrefix(key, "committed-") {
			t.Errorf("%s: read committed returned %s, from an aborted transaction", when, key)
		}
	}
	for i := range smokeCommitted {
		if _, ok := got[fmt.Sprintf("committed-%d", i)]; !ok {
			t.Errorf("%s: committed-%d is missing", when, i)
		}
	}
}
