package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/quarantine-watch/quarantine-watch/consumer"
	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkaproxy"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// The timeouts of TestRecoveryInProcess. The service's defaults (a 45 s
// session, a 60 s transaction timeout) would make its two faults last 90 s
// and 120 s; the test shortens both timeouts by the same factor and
// scales its faults to them, so that what is proven (a transaction open
// past the timeout, then the same process going on) is the same in a
// fifth of the time. QW_RECOVERY_DEFAULT_TIMEOUTS=1 runs it at the
// defaults (about five minutes; not in make test).
const (
	recoverySessionTimeout = 6 * time.Second
	recoveryTxnTimeout     = 12 * time.Second
)

// TestRecoveryInProcess: a production service must survive, in the same
// process, the faults that leave its transaction unable to end. One
// instance, otherwise on the service's default flags, consumes a steady
// stream while:
//
//  1. it is frozen with SIGSTOP inside an open transaction for 1.5× the
//     transaction timeout, then resumed: the broker has aborted the
//     transaction and fenced its producer epoch meanwhile;
//  2. the broker is killed while a transaction is open and kept down for
//     2× the transaction timeout, then restarted on the same data;
//  3. the broker's answers to EndTxn are dropped, the connection silenced,
//     until franz-go's retries of it run out (three request timeouts of
//     10 s): the broker committed the transaction, and the instance does
//     not know it.
//
// The instance talks to the broker through a Kafka-frame-aware proxy
// (kafkaproxy, frameBroker), which drops the answers of 3; the test's own
// clients talk to the broker directly. After each, the instance must be consuming again with the same PID (no
// exit, no restart by the supervisor), and at the end the outputs, read
// with read_committed, must hold every expected finding and dead letter
// once. It prints one eos-recovery line.
func TestRecoveryInProcess(t *testing.T) {
	b, proxy := frameBroker(t)
	if b.External() {
		t.Skip("kills and restarts the broker, which needs a broker kafkatest starts, not KAFKA_BROKERS")
	}
	p := newPipeline(t)
	adm := newAdmin(t, b)
	p.create(t, b, adm, nil)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 71, QuarantineRate: 0.05, NearMissRate: 0.05, MalformedRate: 0.005})
	// 500 records a second: a transaction is open most of the time.
	stream := startStream(ctx, t, b, p.source, gen, 50, 100*time.Millisecond, 200_000)

	args := serviceArgs(seeds{proxy.Addr()}, p.source, p.alerts, p.group)
	txnTimeout := recoveryTxnTimeout
	if os.Getenv("QW_RECOVERY_DEFAULT_TIMEOUTS") == "1" {
		txnTimeout = consumer.DefaultSessionTimeout + consumer.TransactionTimeoutMargin
	} else {
		args = append(args, "--session-timeout", recoverySessionTimeout.String(), "--transaction-timeout", txnTimeout.String())
	}
	t.Logf("transaction timeout %v; flags: %v", txnTimeout, args[1:])
	txnID := kafkatest.Name(t, "txn")
	in := startInstance(t, "a", txnID, args)
	waitGroup(t, adm, p.group, "a holds every partition", func(g kadm.DescribedGroup) bool {
		return g.State == "Stable" && len(g.Members) == 1 && assigned(g.Members[0], p.source) == sourcePartitions
	})
	cmd, _ := in.current()
	pid := cmd.Process.Pid

	scenarios, recoveries := 0, 0
	open := func() bool { return describeTxn(ctx, adm, txnID).State == "Ongoing" }
	// waitOpen polls until the broker shows the instance's transaction
	// open, for up to 10 s.
	waitOpen := func() bool {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if open() {
				return true
			}
		}
		return false
	}

	// 1. SIGSTOP inside a transaction for 1.5× the transaction timeout.
	caught := false
	for attempt := 1; attempt <= 20 && !caught; attempt++ {
		waitOpen()
		in.pause(t)
		caught = open()
		if !caught {
			in.resume(t)
		}
	}
	if !caught {
		t.Fatal("could not freeze the instance inside an open transaction in 20 attempts")
	}
	frozen := describeTxn(ctx, adm, txnID)
	time.Sleep(txnTimeout * 3 / 2)
	after := describeTxn(ctx, adm, txnID)
	t.Logf("froze pid %d for %v in transaction (producer id %d epoch %d); before SIGCONT the id is %s at epoch %d",
		pid, txnTimeout*3/2, frozen.ProducerID, frozen.ProducerEpoch, after.State, after.ProducerEpoch)
	in.resume(t)
	scenarios++
	if recovered(ctx, t, adm, p, in, pid, "SIGSTOP for 1.5× the transaction timeout") {
		recoveries++
	}

	// 2. The broker down for 2× the transaction timeout, killed while a
	// transaction is open.
	caught = waitOpen()
	if err := b.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	t.Logf("killed the broker (the instance's transaction open: %t)", caught)
	time.Sleep(2 * txnTimeout)
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("the broker is back %v after it was killed", time.Since(downAt).Round(time.Millisecond))
	scenarios++
	if recovered(ctx, t, adm, p, in, pid, "the broker down for 2× the transaction timeout") {
		recoveries++
	}

	// 3. Every answer to EndTxn dropped until the instance gives up on its
	// transaction's outcome and rebuilds its session; the broker committed
	// the transaction.
	rebuilds := countLog(in, `"msg":"rebuilding the Kafka session`)
	waitOpen()
	drop := proxy.Arm(kafkaproxy.Fault{Key: int16(kmsg.EndTxn), Action: kafkaproxy.DropResponse}, -1)
	for deadline := time.Now().Add(2 * time.Minute); countLog(in, `"msg":"rebuilding the Kafka session`) == rebuilds; {
		if time.Now().After(deadline) {
			t.Errorf("the instance did not rebuild its session within 2 minutes of EndTxn's answers being dropped")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	drop.Disarm()
	dropped := drop.Events()
	for _, e := range dropped {
		t.Logf("EndTxn answer dropped: %v", e)
	}
	if len(dropped) == 0 || dropped[0].Answered.IsZero() || dropped[0].ErrorCode != 0 {
		t.Errorf("want the first EndTxn whose answer was dropped answered without error by the broker (its outcome known to the broker only), got %v", dropped)
	}
	scenarios++
	if recovered(ctx, t, adm, p, in, pid, "EndTxn's answers dropped past the request timeout") {
		recoveries++
	}

	if err := stream.stop(); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, in)
	cmd, _ = in.current()
	samePID := cmd.Process.Pid == pid && len(in.unplannedExits()) == 0
	stopAll(t, in)
	t.Logf("what the instance said of its sessions:\n%s", grepLog(in, `"msg":"rebuilding the Kafka session`, `"msg":"session rebuilt"`))
	checkUnplanned(t, in)
	_, v := drainOutputs(t, b, p, stream.expected())
	line := fmt.Sprintf("eos-recovery: scenarios=%d recoveries=%d same_pid=%t endtxn_answers_dropped=%d lost=%d duplicates=%d",
		scenarios, recoveries, samePID, len(dropped), v.lost(), v.duplicates())
	t.Log(line)
	fmt.Println(line)
	t.Logf("eos-recovery took %v", time.Since(began).Round(time.Second))
	if recoveries != scenarios || !samePID || v.lost() != 0 || v.duplicates() != 0 {
		t.Errorf("want recoveries=scenarios, same_pid=true, lost=0, duplicates=0")
	}
}

// recovered waits, for up to two minutes, until the group has committed
// the source's end as it was once the fault was over (so the instance
// consumed again after it), and says whether the process doing so is
// still pid, without an exit in between.
func recovered(ctx context.Context, t *testing.T, adm *kadm.Client, p pipeline, in *instance, pid int, what string) bool {
	t.Helper()
	began := time.Now()
	var target int64 = -1
	for time.Since(began) < 2*time.Minute {
		if ex := in.unplannedExits(); len(ex) > 0 {
			t.Errorf("%s: the instance exited: %s", what, ex[0].line)
			return false
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if target < 0 {
			if ends, err := adm.ListEndOffsets(cctx, p.source); err == nil {
				target = 0
				ends.Each(func(o kadm.ListedOffset) { target += o.Offset })
			}
		}
		committed, err := committedTotal(cctx, adm, p.group, p.source)
		cancel()
		if target >= 0 && err == nil && committed >= target {
			cmd, _ := in.current()
			t.Logf("%s: the group committed the %d records written before it was over %v later (pid %d)",
				what, target, time.Since(began).Round(time.Millisecond), cmd.Process.Pid)
			if cmd.Process.Pid != pid {
				t.Errorf("%s: pid %d consumes, want %d", what, cmd.Process.Pid, pid)
				return false
			}
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("%s: the group did not catch up within two minutes", what)
	return false
}

// countLog returns how many lines of an instance's log contain needle.
func countLog(in *instance, needle string) int {
	data, err := os.ReadFile(in.logPath)
	if err != nil {
		return 0
	}
	return strings.Count(string(data), needle)
}

// grepLog returns the lines of an instance's log that contain any of
// needles, each cut to 400 bytes.
func grepLog(in *instance, needles ...string) string {
	f, err := os.Open(in.logPath)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, n := range needles {
			if strings.Contains(line, n) {
				if len(line) > 400 {
					line = line[:400] + "..."
				}
				lines = append(lines, "  "+line)
				break
			}
		}
	}
	return strings.Join(lines, "\n")
}
