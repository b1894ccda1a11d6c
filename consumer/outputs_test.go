package consumer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// refusedMarker starts the eventID of the records whose outputs the broker
// of TestRefusedOutputs refuses.
const refusedMarker = "refuse-me-"

// TestRefusedOutputs has the broker refuse, with INVALID_RECORD, every
// produce request that carries an output of some records (found by their
// eventID in the uncompressed batches), and so also refuse the other
// records in those requests. Each refused alert must be replaced by its
// source record in the dead-letter topic (class output_rejected), each
// refused dead letter by itself without key and value, every other record
// of the refused requests produced again, and every transaction commit: the
// member never stops and a read_committed reader finds each output once.
func TestRefusedOutputs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		refuse   []string // output topics whose requests are refused
		stripped bool     // the refused records' dead letters are stripped
	}{
		{"alerts", []string{alertsTopic}, false},
		{"alerts and dead letters", []string{alertsTopic, dlqTopic}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cluster := newCluster(t)
			brokers := cluster.ListenAddrs()
			var refused atomic.Int64
			cluster.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				cluster.KeepControl()
				req := kreq.(*kmsg.ProduceRequest)
				hit := false
				for _, topic := range req.Topics {
					for _, p := range topic.Partitions {
						if bytes.Contains(p.Records, []byte(refusedMarker)) && slices.Contains(tc.refuse, topic.Topic) {
							hit = true
						}
					}
				}
				if !hit {
					return nil, nil, false
				}
				refused.Add(1)
				resp := req.ResponseKind().(*kmsg.ProduceResponse)
				for _, topic := range req.Topics {
					rt := kmsg.NewProduceResponseTopic()
					rt.Topic = topic.Topic
					for _, p := range topic.Partitions {
						rp := kmsg.NewProduceResponseTopicPartition()
						rp.Partition = p.Partition
						rp.ErrorCode = kerr.InvalidRecord.Code
						rt.Partitions = append(rt.Partitions, rp)
					}
					resp.Topics = append(resp.Topics, rt)
				}
				return resp, nil, true
			})

			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			exp := loadSource(t, cl, 3000, cloudtrailgen.Config{Seed: 5, QuarantineRate: 0.02, NearMissRate: 0.02, MalformedRate: 0.01})
			// Three records whose alerts are refused, among the others.
			quarantine := readSample(t, "02_attach_user_policy_quarantine_v2_panther.json")
			sources := map[string]*kgo.Record{}
			for i := range 3 {
				v := bytes.Replace(quarantine, []byte("e7bb4b23-66e1-4656-b607-f575fde3b790"), []byte(refusedMarker+strconv.Itoa(i)), 1)
				r := &kgo.Record{Topic: sourceTopic, Key: []byte("key-" + strconv.Itoa(i)), Value: v}
				if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
					t.Fatal(err)
				}
				at := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
				exp.deadLetters[at] = true
				sources[at] = r
				exp.records++
			}
			more := loadSource(t, cl, 2000, cloudtrailgen.Config{Seed: 6, QuarantineRate: 0.02, NearMissRate: 0.02, MalformedRate: 0.01})
			for k := range more.alerts {
				exp.alerts[k] = true
			}
			for k := range more.deadLetters {
				exp.deadLetters[k] = true
			}

			cfg := memberConfig(t, brokers, 1)
			cfg.MaxBatch = 0 // the default
			cfg.Stats = new(Stats)
			// Uncompressed batches, so that the control function sees
			// the eventIDs.
			cfg.ClientOpts = append(cfg.ClientOpts, kgo.ProducerBatchCompression(kgo.NoCompression()))
			m := startMember(t, cfg)
			waitCommitted(t, kadm.NewClient(cl), "quarantine-watch", 2*time.Minute)
			select {
			case err := <-m.done:
				t.Fatalf("member stopped on its own: %v", err)
			default:
			}
			if err := m.stop(t); err != nil {
				t.Fatalf("member stopped with %v", err)
			}
			if refused.Load() == 0 {
				t.Fatal("the broker refused nothing: the test proves nothing")
			}
			got, dead := drainDead(t, brokers)
			check(t, exp, got)
			st := cfg.Stats
			t.Logf("%d requests refused; %d transactions committed, %d aborted", refused.Load(), st.Committed.Load(), st.Aborted.Load())
			if st.Aborted.Load() > 0 {
				t.Errorf("%d transactions aborted: a refused record must not abort its batch", st.Aborted.Load())
			}
			for at, src := range sources {
				r := dead[at]
				if r == nil {
					continue // check has said so
				}
				h := headerMap(r)
				if h[producer.HeaderErrorClass] != producer.ClassOutputRejected || !strings.Contains(h[producer.HeaderError], "INVALID_RECORD") {
					t.Errorf("dead letter of %s: class %q, error %q; want %s and the broker's error", at, h[producer.HeaderErrorClass], h[producer.HeaderError], producer.ClassOutputRejected)
				}
				wantKey, wantValue := src.Key, src.Value
				if tc.stripped {
					wantKey, wantValue = nil, nil
					if h[producer.HeaderValueTruncated] != strconv.Itoa(len(src.Value)) || h[producer.HeaderKeyTruncated] != strconv.Itoa(len(src.Key)) {
						t.Errorf("stripped dead letter of %s: headers %v; want the whole lengths", at, h)
					}
				}
				if !bytes.Equal(r.Key, wantKey) || !bytes.Equal(r.Value, wantValue) {
					t.Errorf("dead letter of %s: key %q, value of %d bytes; want %q, %d bytes", at, r.Key, len(r.Value), wantKey, len(wantValue))
				}
			}
		})
	}
}

// TestOutputLimitLowered lowers the alerts topic's max.message.bytes while
// the member runs: the limit it read at start-up is then too large, and
// the broker refuses, as too large, an alert cut to it. The record must go
// to the dead-letter topic and the batch commit.
func TestOutputLimitLowered(t *testing.T) {
	cluster := newCluster(t)
	brokers := cluster.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	quarantine := readSample(t, "02_attach_user_policy_quarantine_v2_panther.json")
	with := func(id, agent string) []byte {
		v := bytes.Replace(quarantine, []byte("e7bb4b23-66e1-4656-b607-f575fde3b790"), []byte(id), 1)
		return bytes.Replace(v, []byte(`"userAgent": "AWS Internal"`), []byte(`"userAgent": "AWS Internal`+agent+`"`), 1)
	}
	produce := func(id, agent string) string {
		r := &kgo.Record{Topic: sourceTopic, Value: with(id, agent)}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d/%d", r.Partition, r.Offset)
	}
	exp := expectation{alerts: map[string]bool{}, deadLetters: map[string]bool{}}
	produce("before-0000", "")
	exp.alerts[producer.AlertID(matcher.ElasticQuarantineRule.ID, "before-0000")] = true

	cfg := memberConfig(t, brokers, 1)
	cfg.MaxBatch = 0
	cfg.Matcher = matcher.Config{}
	cfg.Stats = new(Stats)
	m := startMember(t, cfg)
	waitCommitted(t, adm, "quarantine-watch", time.Minute)

	small := "20000"
	if _, err := adm.AlterTopicConfigs(context.Background(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: &small}}, alertsTopic); err != nil {
		t.Fatal(err)
	}
	exp.deadLetters[produce("after-big-0000", incompressible(30_000))] = true
	produce("after-small-0000", "")
	exp.alerts[producer.AlertID(matcher.ElasticQuarantineRule.ID, "after-small-0000")] = true
	waitCommitted(t, adm, "quarantine-watch", time.Minute)
	if err := m.stop(t); err != nil {
		t.Fatalf("member stopped with %v", err)
	}
	got, dead := drainDead(t, brokers)
	check(t, exp, got)
	for at, r := range dead {
		if h := headerMap(r); h[producer.HeaderErrorClass] != producer.ClassOutputRejected || !strings.Contains(h[producer.HeaderError], "MESSAGE_TOO_LARGE") {
			t.Errorf("dead letter of %s: class %q, error %q", at, h[producer.HeaderErrorClass], h[producer.HeaderError])
		}
	}
	if n := cfg.Stats.Aborted.Load(); n > 0 {
		t.Errorf("%d transactions aborted", n)
	}
}

// drainDead is drain, also returning the first copy of each dead letter.
func drainDead(t *testing.T, brokers []string) (drained, map[string]*kgo.Record) {
	t.Helper()
	got := drain(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(dlqTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	dead := map[string]*kgo.Record{}
	for markers := 0; markers < 6; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading the dead letters: %v", ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == endMarker {
				markers++
				return
			}
			at := header(r, producer.HeaderSourcePartition) + "/" + header(r, producer.HeaderSourceOffset)
			if dead[at] == nil {
				dead[at] = r
			}
		})
	}
	return got, dead
}

// incompressible returns n letters and digits that compression does not
// shrink much: the broker checks max.message.bytes on compressed batches.
func incompressible(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		h := sha256.Sum256([]byte(strconv.Itoa(i)))
		b.WriteString(hex.EncodeToString(h[:]))
	}
	return b.String()[:n]
}

func headerMap(r *kgo.Record) map[string]string {
	m := map[string]string{}
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

func readSample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "shared", "samples", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOutputLimitsRead checks what Run makes of the output topics'
// max.message.bytes: the broker's default when the topic sets none, the
// topic's own value, a refusal naming the topic below what a dead letter
// needs, and never more than half the producer's buffer.
func TestOutputLimitsRead(t *testing.T) {
	cluster := newCluster(t)
	brokers := cluster.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	set := func(topic, v string) {
		t.Helper()
		if _, err := adm.AlterTopicConfigs(context.Background(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: &v}}, topic); err != nil {
			t.Fatal(err)
		}
	}
	read := func(memory int64) (*outputLimits, error) {
		cfg := memberConfig(t, brokers, 1)
		cfg.MemoryLimit = memory
		c, err := cfg.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		return c.limits, c.limits.read(context.Background(), adm, &c)
	}
	l, err := read(0)
	if err != nil || l.alerts.Load() != producer.DefaultMaxMessageBytes || l.dlq.Load() != producer.DefaultMaxMessageBytes {
		t.Fatalf("broker defaults: alerts %d, dlq %d, %v; want %d", l.alerts.Load(), l.dlq.Load(), err, producer.DefaultMaxMessageBytes)
	}
	set(alertsTopic, "5000000")
	set(dlqTopic, "4096")
	if l, err = read(0); err != nil || l.alerts.Load() != 5_000_000 || l.dlq.Load() != 4096 {
		t.Errorf("topic settings: alerts %d, dlq %d, %v; want 5000000, 4096", l.alerts.Load(), l.dlq.Load(), err)
	}
	// 64 MiB of memory: the producer buffers 4 MiB, a record is at most 2.
	if l, err = read(64 << 20); err != nil || l.alerts.Load() != 2<<20 {
		t.Errorf("small memory budget: alerts %d, %v; want %d", l.alerts.Load(), err, 2<<20)
	}
	set(dlqTopic, "1000")
	if _, err = read(0); err == nil || !strings.Contains(err.Error(), dlqTopic) || !strings.Contains(err.Error(), "max.message.bytes=1000") {
		t.Errorf("a dead-letter topic of 1000 bytes: %v; want a refusal naming it", err)
	}
}
