package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

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
// CloudTrail shipper writes them (gzip batches of 1 MiB, about 1.5 KB per
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
		configs    map[string]*string
	}{{p.source, memoryPartitions, nil}, {p.alerts, outputPartitions, nil}, {p.dlq, outputPartitions, nil},
		{p.watchlist, outputPartitions, watchTopicConfigs}, {p.context, outputPartitions, nil}} {
		resp, err := adm.CreateTopic(ctx, tc.partitions, -1, tc.configs, tc.topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatalf("creating topic %s: %v", tc.topic, err)
		}
	}

	// Each partition gets about 12 MB of values, under 2 MB of gzip
	// batches on the broker: several fetches of 1 MiB per partition.
	const records = 300_000
	began := time.Now()
	valueBytes := writeBacklog(ctx, t, b, p.source, memoryPartitions, records)
	t.Logf("backlog: about %d records, %d MB of values over %d partitions, written in %v",
		records, valueBytes>>20, memoryPartitions, time.Since(began).Round(time.Millisecond))

	in := startInstanceEnv(t, "memory", kafkatest.Name(t, "txn"), serviceArgs(b, p.source, p.alerts, p.group), []string{"GOMEMLIMIT=" + podGOMEMLIMIT})
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
	t.Logf("memory: %d backlogged partitions, GOMEMLIMIT=%s: peak RSS %d MiB (VmHWM), backlog read in %v",
		memoryPartitions, podGOMEMLIMIT, hwm>>20, took.Round(time.Millisecond))
	if hwm > podMemoryLimit {
		t.Errorf("peak RSS %d MiB is over the pod's limit of %d MiB: the container would have been killed", hwm>>20, podMemoryLimit>>20)
	}
}

// writeBacklog writes about n generated single CloudTrail records to each
// partition of topic in gzip batches of 1 MiB of records (Filebeat's
// compression, and a batch as large as franz-go's), and returns the bytes
// of values written. The batches are built once and sent to every
// partition: producing 300,000 records through a client takes minutes
// under the race detector.
func writeBacklog(ctx context.Context, t *testing.T, b *kafkatest.Broker, topic string, partitions int32, n int) int64 {
	t.Helper()
	gen := cloudtrailgen.New(cloudtrailgen.Config{
		Seed: 36, QuarantineRate: 1e-4, NearMissRate: 1e-3,
		Shapes: map[cloudtrailgen.Shape]float64{cloudtrailgen.ShapeRecord: 1},
	})
	var batches [][]byte
	var valueBytes, perPartition int64
	for perPartition < int64(n)/int64(partitions) {
		batch, values, count := gzipBatch(t, gen, 1<<20)
		batches = append(batches, batch)
		valueBytes += values
		perPartition += int64(count)
	}
	// Produce v13 names topics by id; v12 by name.
	versions := kversion.Stable()
	versions.SetMaxKeyVersion(int16(kmsg.Produce), 12)
	cl := newClient(t, b, kgo.MaxVersions(versions))
	for _, batch := range batches {
		req := kmsg.NewPtrProduceRequest()
		req.Acks = -1
		req.TimeoutMillis = 30_000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = topic
		for p := range partitions {
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Partition = p
			rp.Records = batch
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("writing the backlog: %v", err)
		}
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					t.Fatalf("writing the backlog to partition %d: %v", rp.Partition, err)
				}
			}
		}
	}
	return valueBytes * int64(partitions)
}

// gzipBatch returns a Kafka record batch (v2, gzip) of generated records
// holding about size bytes of records, the bytes of its values, and its
// record count.
func gzipBatch(t *testing.T, gen *cloudtrailgen.Generator, size int) ([]byte, int64, int) {
	t.Helper()
	var records []byte
	var values int64
	count := 0
	for len(records) < size {
		v := gen.Next().Value
		var body []byte
		body = append(body, 0)              // attributes
		body = binary.AppendVarint(body, 0) // timestamp delta
		body = binary.AppendVarint(body, int64(count))
		body = binary.AppendVarint(body, -1) // no key
		body = binary.AppendVarint(body, int64(len(v)))
		body = append(body, v...)
		body = binary.AppendVarint(body, 0) // no headers
		records = binary.AppendVarint(records, int64(len(body)))
		records = append(records, body...)
		values += int64(len(v))
		count++
	}
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	zw.Write(records)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	batch := kmsg.RecordBatch{
		Magic:           2,
		Attributes:      1, // gzip
		LastOffsetDelta: int32(count - 1),
		FirstTimestamp:  now,
		MaxTimestamp:    now,
		ProducerID:      -1,
		ProducerEpoch:   -1,
		FirstSequence:   -1,
		NumRecords:      int32(count),
		Records:         zipped.Bytes(),
	}
	raw := batch.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12)) // Length: after itself and FirstOffset
	// The CRC-32C covers everything from the attributes on.
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw, values, count
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
