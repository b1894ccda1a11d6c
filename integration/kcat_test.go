package integration

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// TestKcatReadsCommitted checks the alerts topic with a reader that is not
// franz-go: kcat (librdkafka) with isolation.level=read_committed must list
// the same alert ids as the Go reader, each once. A transaction aborted on
// the alerts topic by another producer proves that the isolation level is
// in effect: kcat shows its records under read_uncommitted and hides them
// under read_committed. The run uses every rule (--rules all), so that the
// companion rules' findings are checked end to end too.
func TestKcatReadsCommitted(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if kafkatest.Required() {
			t.Fatalf("kcat is not installed (apt-get install kcat; .ci/run does), and %s=1 requires this test", kafkatest.EnvRequire)
		}
		t.Skipf("kcat is not installed: skipping the librdkafka cross-check (apt-get install kcat; %s=1 makes this a failure)", kafkatest.EnvRequire)
	}
	b, p, adm := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	w := newSourceWriter(t, b, p.source)
	exp := newExpected()
	loadSamples(ctx, t, w, exp, true)
	g := generate(cloudtrailgen.New(cloudtrailgen.Config{Seed: 17, QuarantineRate: 0.01, NearMissRate: 0.05, MalformedRate: 0.01}), 3000)
	rs, err := w.write(ctx, g.values, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp.add(rs, g, true)

	in := startInstance(t, "a", kafkatest.Name(t, "txn-a"), serviceArgs(b, p.source, p.alerts, p.group, "--rules", "all"))
	waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, in)
	stopAll(t, in)
	checkUnplanned(t, in)

	// An aborted transaction on the alerts topic, one record per
	// partition, with a key no alert has.
	abortedKey := "aborted-" + kafkatest.Name(t, "key")
	txn := newClient(t, b, kgo.TransactionalID(kafkatest.Name(t, "txn-aborted")), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for part := range int32(outputPartitions) {
		r := &kgo.Record{Topic: p.alerts, Partition: part, Key: []byte(abortedKey), Value: []byte(`{"aborted":true}`)}
		if err := txn.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("producing the record to abort: %v", err)
		}
	}
	if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatalf("aborting: %v", err)
	}

	// The end markers come after the aborted records, so a reader that
	// shows every marker has read past them.
	r, _ := drainOutputs(t, b, p, exp)
	goKeys := r.alertIDs()
	if _, ok := goKeys[abortedKey]; ok {
		t.Errorf("the Go read_committed reader shows the aborted record")
	}

	committed := runKcat(ctx, t, kcat, b, p.alerts, "read_committed")
	uncommitted := runKcat(ctx, t, kcat, b, p.alerts, "read_uncommitted")
	for level, keys := range map[string]map[string]int{"read_committed": committed, "read_uncommitted": uncommitted} {
		if n := keys[endMarker]; n != outputPartitions {
			t.Errorf("kcat %s: %d end markers, want %d: it did not read to the end", level, n, outputPartitions)
		}
	}
	if n := uncommitted[abortedKey]; n != outputPartitions {
		t.Errorf("kcat read_uncommitted shows the aborted record %d times, want %d: the check below proves nothing", n, outputPartitions)
	}
	if n := committed[abortedKey]; n != 0 {
		t.Errorf("kcat read_committed shows the aborted record %d times: read_committed is not in effect", n)
	}
	delete(committed, endMarker)
	var missing, extra, dup []string
	for id := range goKeys {
		if committed[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, n := range committed {
		if _, ok := goKeys[id]; !ok {
			extra = append(extra, id)
		}
		if n > 1 {
			dup = append(dup, fmt.Sprintf("%s×%d", id, n))
		}
	}
	t.Logf("kcat read_committed: %d alert ids (Go reader: %d; expected %d); read_uncommitted: the aborted key %d times",
		len(committed), len(goKeys), len(exp.alerts), uncommitted[abortedKey])
	if len(missing)+len(extra)+len(dup) > 0 {
		t.Errorf("kcat and the Go reader disagree: missing from kcat %v, only in kcat %v, repeated in kcat %v", first(missing), first(extra), first(dup))
	}
}

// runKcat reads topic from the start to its end with kcat and returns how
// many times each key was read.
func runKcat(ctx context.Context, t *testing.T, kcat string, b cluster, topic, level string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	args := []string{"-b", strings.Join(b.Brokers(), ","), "-C", "-t", topic, "-o", "beginning", "-e", "-q",
		"-X", "isolation.level=" + level, "-f", `%k\n`}
	cmd := exec.CommandContext(ctx, kcat, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	keys := map[string]int{}
	for line := range strings.SplitSeq(string(out), "\n") {
		if line != "" {
			keys[line]++
		}
	}
	return keys
}

func first(s []string) []string { return s[:min(len(s), 5)] }
