package integration

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// The deployment's memory settings (deploy/kubernetes): the container's
// limit and the GOMEMLIMIT the pod sets under it.
const (
	podMemoryLimit = 256 << 20
	podGOMEMLIMIT  = "230MiB"
)

// memoryPartitions is how many backlogged partitions one instance owns in
// TestMemoryBounded: three times the 12 of the benchmark, what the last
// instance of a group of three would get if the other two died.
const memoryPartitions = 36

// TestMemoryBounded runs one instance with the service's default flags and
// the deployment's GOMEMLIMIT over a backlog of 36 partitions written as a
// CloudTrail shipper writes them (lz4 batches of 1 MiB, about 1.5 KB per
// record), and reads its peak resident set (VmHWM) once the group has
// committed the whole backlog: it must stay within the pod's 256 MiB
// limit, which the kernel enforces by killing the container.
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 300,000 records")
	}
	b := kafka.Broker(t)
	adm := newAdmin(t, b)
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		topic      string
		partitions int32
	}{{p.source, memoryPartitions}, {p.alerts, outputPartitions}, {p.dlq, outputPartitions}} {
		resp, err := adm.CreateTopic(ctx, tc.partitions, -1, nil, tc.topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatalf("creating topic %s: %v", tc.topic, err)
		}
	}

	// Each partition gets about 12 MB of values, 3.5 MB of lz4 batches on
	// the broker: several fetches of 1 MiB per partition.
	const records = 300_000
	began := time.Now()
	valueBytes := writeBacklog(ctx, t, b, p.source, records)
	t.Logf("backlog: %d records, %d MB of values over %d partitions, written in %v",
		records, valueBytes>>20, memoryPartitions, time.Since(began).Round(time.Millisecond))

	in := startInstanceEnv(t, "memory", kafkatest.Name(t, "txn"), defaultArgs(b, p), []string{"GOMEMLIMIT=" + podGOMEMLIMIT})
	began = time.Now()
	waitCaughtUpNoExit(t, adm, p, 5*time.Minute, in)
	took := time.Since(began)
	cmd, _ := in.current()
	hwm, err := peakRSS(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	stopAll(t, in)
	checkUnplanned(t, in)
	t.Logf("memory: %d backlogged partitions, GOMEMLIMIT=%s: peak RSS %d MiB (VmHWM), %d records in %v",
		memoryPartitions, podGOMEMLIMIT, hwm>>20, records, took.Round(time.Millisecond))
	if hwm > podMemoryLimit {
		t.Errorf("peak RSS %d MiB is over the pod's limit of %d MiB: the container would have been killed", hwm>>20, podMemoryLimit>>20)
	}
}

// writeBacklog writes n generated single CloudTrail records to topic as a
// shipper does, and returns the bytes of values written.
func writeBacklog(ctx context.Context, t *testing.T, b *kafkatest.Broker, topic string, n int) int64 {
	t.Helper()
	cl := newClient(t, b,
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.ProducerLinger(10*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20),
	)
	var (
		mu       sync.Mutex
		firstErr error
		total    int64
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			firstErr = cmp.Or(firstErr, err)
			mu.Unlock()
		}
	}
	gen := cloudtrailgen.New(cloudtrailgen.Config{
		Seed: 36, QuarantineRate: 1e-4, NearMissRate: 1e-3,
		Shapes: map[cloudtrailgen.Shape]float64{cloudtrailgen.ShapeRecord: 1},
	})
	for range n {
		v := gen.Next().Value
		total += int64(len(v))
		cl.Produce(ctx, &kgo.Record{Value: v}, promise)
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if firstErr != nil {
		t.Fatalf("writing the backlog: %v", firstErr)
	}
	return total
}

// peakRSS returns a process's VmHWM in bytes.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM %q: %w", rest, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM (%v)", pid, sc.Err())
}
