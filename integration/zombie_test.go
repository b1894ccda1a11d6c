package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// TestZombieFencing freezes an instance with SIGSTOP while it holds
// partitions and has a transaction open with findings in it, waits until the
// group has given its partitions to the other instance (which reads the
// same records again), then lets it run on with SIGCONT. The zombie's
// transaction must not commit: either its producer epoch was fenced (the
// broker aborted the timed-out transaction) or its offset commit is
// refused for an old generation and it aborts. Every finding must be on
// the alerts topic exactly once.
func TestZombieFencing(t *testing.T) {
	b, p, adm := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// A steady stream rich in findings, so that the zombie's transaction
	// holds some and the group has work while it is frozen.
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 31, QuarantineRate: 0.05, NearMissRate: 0.05, MalformedRate: 0.005})
	// 1,000 records a second, for two minutes at most: the test stops it
	// once the zombie has come back, well before.
	stream := startStream(ctx, t, b, p.source, gen, 100, 100*time.Millisecond, 120_000)

	args := serviceArgs(b, p.source, p.alerts, p.group, fastFailover...)
	txnA := kafkatest.Name(t, "txn-a")
	a := startInstance(t, "a", txnA, args)
	zombieID := waitGroup(t, adm, p.group, "a alone holds every partition", func(g kadm.DescribedGroup) bool {
		return len(g.Members) == 1 && assigned(g.Members[0], p.source) == sourcePartitions
	}).Members[0].MemberID
	other := startInstance(t, "b", kafkatest.Name(t, "txn-b"), args)
	g := waitGroup(t, adm, p.group, "a and b share the partitions", func(g kadm.DescribedGroup) bool {
		return len(g.Members) == 2 && assigned(g.Members[0], p.source) > 0 && assigned(g.Members[1], p.source) > 0
	})
	var held []int32
	for _, m := range g.Members {
		if m.MemberID == zombieID {
			held = partitionsOf(m, p.source)
		}
	}
	if len(held) == 0 {
		t.Fatalf("a (member %s) holds no partition: %+v", zombieID, g.Members)
	}

	// Freeze a at a moment when the broker shows its transaction open with
	// an alerts partition in it: findings that must never commit. Poll
	// until it is, freeze, and look twice more: an EndTxn already on its
	// way when the signal landed shows up by then.
	open := func(d kadm.DescribedTransaction) bool {
		return d.State == "Ongoing" && slices.Contains(d.Topics.Topics(), p.alerts)
	}
	var frozen kadm.DescribedTransaction
	caught := false
	for attempt := 1; attempt <= 20 && !caught; attempt++ {
		deadline := time.Now().Add(5 * time.Second)
		for polls := 0; polls < 5000 && time.Now().Before(deadline) && !open(describeTxn(ctx, adm, txnA)); polls++ {
		}
		a.pause(t)
		frozen = describeTxn(ctx, adm, txnA)
		again := describeTxn(ctx, adm, txnA)
		caught = open(frozen) && open(again) && again.StartTimestamp == frozen.StartTimestamp
		if caught {
			t.Logf("froze a (partitions %v of %s) on attempt %d: transaction %s, producer id %d epoch %d, partitions %v",
				held, p.source, attempt, frozen.State, frozen.ProducerID, frozen.ProducerEpoch, frozen.Topics.Sorted())
		} else {
			a.resume(t)
		}
	}
	if !caught {
		t.Fatalf("could not freeze a inside a transaction with findings in 20 attempts (last state %s)", frozen.State)
	}
	pausedAt := time.Now()
	waitGroup(t, adm, p.group, "b holds every partition, a is out", func(g kadm.DescribedGroup) bool {
		return g.State == "Stable" && len(g.Members) == 1 && g.Members[0].MemberID != zombieID &&
			assigned(g.Members[0], p.source) == sourcePartitions
	})
	moved := describeTxn(ctx, adm, txnA)
	t.Logf("the group moved a's partitions to b %v after the freeze; a's transaction is now %s (producer id %d epoch %d); resuming a",
		time.Since(pausedAt).Round(time.Millisecond), moved.State, moved.ProducerID, moved.ProducerEpoch)
	if moved.ProducerID == frozen.ProducerID && moved.ProducerEpoch == frozen.ProducerEpoch && strings.Contains(moved.State, "Commit") {
		t.Errorf("the frozen transaction committed while a was stopped: %s", moved.State)
	}
	logBefore, exitsBefore := logSize(a), len(a.unplannedExits())
	a.resume(t)

	// The zombie now finds out: it is fenced and exits (and is restarted),
	// or it aborts and rejoins the group. Either way the group ends with
	// two members sharing the partitions.
	waitGroup(t, adm, p.group, "a is back in the group", func(g kadm.DescribedGroup) bool {
		return g.State == "Stable" && len(g.Members) == 2 && assigned(g.Members[0], p.source) > 0 && assigned(g.Members[1], p.source) > 0
	})
	after := describeTxn(ctx, adm, txnA)
	t.Logf("a's transactional id now: state %s, producer id %d epoch %d (frozen at epoch %d)", after.State, after.ProducerID, after.ProducerEpoch, frozen.ProducerEpoch)
	t.Logf("a's log after SIGCONT:\n%s", logSince(a, logBefore, 12))
	t.Logf("a exited on its own %d times after SIGCONT (a fenced producer exits and is restarted)", len(a.unplannedExits())-exitsBefore)
	if exitsBefore > 0 {
		t.Errorf("a exited on its own %d times before it was frozen", exitsBefore)
	}

	if err := stream.stop(); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, a, other)
	stopAll(t, a, other)
	checkUnplanned(t, other)
	drainOutputs(t, b, p, stream.expected())
}

// assigned counts the partitions of topic assigned to m.
func assigned(m kadm.DescribedGroupMember, topic string) int {
	return len(partitionsOf(m, topic))
}

func partitionsOf(m kadm.DescribedGroupMember, topic string) []int32 {
	c, ok := m.Assigned.AsConsumer()
	if !ok {
		return nil
	}
	for _, t := range c.Topics {
		if t.Topic == topic {
			return slices.Sorted(slices.Values(t.Partitions))
		}
	}
	return nil
}

// waitGroup polls DescribeGroups until ok holds, for at most a minute.
func waitGroup(t *testing.T, adm *kadm.Client, group, what string, ok func(kadm.DescribedGroup) bool) kadm.DescribedGroup {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last kadm.DescribedGroup
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		gs, err := adm.DescribeGroups(ctx, group)
		cancel()
		if err == nil {
			last, lastErr = gs[group], gs[group].Err
			if lastErr == nil && ok(last) {
				return last
			}
		} else {
			lastErr = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	var members []string
	for _, m := range last.Members {
		c, _ := m.Assigned.AsConsumer()
		members = append(members, fmt.Sprintf("%s: %+v", m.MemberID, c))
	}
	t.Fatalf("group %s: not %q within a minute: state %s, members %v (%v)", group, what, last.State, members, lastErr)
	return last
}

func describeTxn(ctx context.Context, adm *kadm.Client, id string) kadm.DescribedTransaction {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ds, err := adm.DescribeTransactions(ctx, id)
	if err != nil {
		return kadm.DescribedTransaction{State: "unknown: " + err.Error()}
	}
	return ds[id]
}

func logSize(in *instance) int64 {
	st, err := os.Stat(in.logPath)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logSince returns up to n lines the instance logged past offset that
// tell how a transaction ended: errors, aborts, fencing, and the process's
// last words.
func logSince(in *instance, offset int64, n int) string {
	data, err := os.ReadFile(in.logPath)
	if err != nil || int64(len(data)) < offset {
		return fmt.Sprintf("(%v)", err)
	}
	var lines []string
	for line := range strings.SplitSeq(string(data[offset:]), "\n") {
		interesting := !strings.HasPrefix(line, "{") || strings.Contains(line, `"level":"ERROR"`) ||
			strings.Contains(line, "abort") || strings.Contains(line, "fenc") || strings.Contains(line, "epoch")
		if line == "" || !interesting {
			continue
		}
		if len(line) > 400 {
			line = line[:400] + "..."
		}
		lines = append(lines, "  "+line)
		if len(lines) == n {
			break
		}
	}
	return strings.Join(lines, "\n")
}

// stream writes generated records in chunks at a steady pace until stopped
// or max records are written, recording what the outputs must hold. It
// stops between chunks, so that every record written is expected.
type stream struct {
	stopping chan struct{}
	done     chan error
	mu       sync.Mutex
	exp      *expected
}

func startStream(ctx context.Context, t *testing.T, b *kafkatest.Broker, topic string, gen *cloudtrailgen.Generator, chunk int, every time.Duration, maxRecords int) *stream {
	w := newSourceWriter(t, b, topic)
	s := &stream{stopping: make(chan struct{}), done: make(chan error, 1), exp: newExpected()}
	ctx, cancel := context.WithCancel(ctx)
	exited := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	go func() {
		defer close(exited)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for written := 0; written < maxRecords; written += chunk {
			g := generate(gen, chunk)
			rs, err := w.write(ctx, g.values, nil)
			if err != nil {
				s.done <- err
				return
			}
			s.mu.Lock()
			s.exp.add(rs, g, false)
			s.mu.Unlock()
			select {
			case <-tick.C:
			case <-s.stopping:
				s.done <- nil
				return
			}
		}
		s.done <- nil
	}()
	return s
}

// stop stops the stream and returns its error, if any.
func (s *stream) stop() error {
	close(s.stopping)
	select {
	case err := <-s.done:
		return err
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("the source stream did not stop within 2 minutes")
	}
}

func (s *stream) expected() *expected {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exp
}
