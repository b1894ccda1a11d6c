package kafkatest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestClusterEnv(t *testing.T) {
	ports := [][2]int{{40001, 40002}, {40003, 40004}, {40005, 40006}}
	env := ClusterEnv(2, ports)
	want := map[string]string{
		"KAFKA_NODE_ID":                                  "2",
		"KAFKA_LISTENERS":                                "PLAINTEXT://127.0.0.1:40003,CONTROLLER://127.0.0.1:40004",
		"KAFKA_ADVERTISED_LISTENERS":                     "PLAINTEXT://127.0.0.1:40003",
		"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@127.0.0.1:40002,2@127.0.0.1:40004,3@127.0.0.1:40006",
		"KAFKA_PROCESS_ROLES":                            "broker,controller",
		"KAFKA_DEFAULT_REPLICATION_FACTOR":               "3",
		"KAFKA_MIN_INSYNC_REPLICAS":                      "2",
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "3",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "2",
		"KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE":           "false",
	}
	checkEnv(t, env, want)
}

// TestClusterFailover starts a cluster, checks that every partition it
// makes, the internal topics' included, has three replicas and
// min.insync.replicas 2, kills the quorum leader, sees another node lead
// and a transaction commit on the two left, restarts the killed node and
// reads every committed record once.
func TestClusterFailover(t *testing.T) {
	c := StartClusterForTest(t, ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	addrs := c.Brokers()
	seen := map[string]bool{}
	for _, a := range addrs {
		if !strings.HasPrefix(a, "127.0.0.1:") || seen[a] {
			t.Fatalf("Brokers() = %v, want %d distinct 127.0.0.1 addresses", addrs, ClusterSize)
		}
		seen[a] = true
	}
	if len(addrs) != ClusterSize {
		t.Fatalf("Brokers() = %v, want %d", addrs, ClusterSize)
	}

	topic := Name(t, "topic")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...),
		kgo.TransactionalID(Name(t, "txn")),
		kgo.DefaultProduceTopic(topic),
		kgo.ConsumerGroup(Name(t, "group")), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 3, -1, nil, topic); err != nil {
		t.Fatalf("creating %s: %v", topic, err)
	}
	commit := func(what string, n int) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for i := range n {
			cl.Produce(ctx, kgo.StringRecord(fmt.Sprintf("%s-%d", what, i)), nil)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatalf("%s: flushing: %v", what, err)
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("%s: committing: %v", what, err)
		}
	}
	commit("before", 30)
	// Reading and committing offsets creates __consumer_offsets.
	got := map[string]int{}
	read := func(want int) {
		t.Helper()
		for len(got) < want {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("read %d of %d records", len(got), want)
			}
			fs.EachRecord(func(r *kgo.Record) { got[string(r.Value)]++ })
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			t.Fatalf("committing offsets: %v", err)
		}
	}
	read(30)

	md, err := adm.Metadata(ctx, topic, "__consumer_offsets", "__transaction_state")
	if err != nil {
		t.Fatal(err)
	}
	for _, td := range md.Topics.Sorted() {
		if td.Err != nil || len(td.Partitions) == 0 {
			t.Fatalf("topic %s: %v, %d partitions", td.Topic, td.Err, len(td.Partitions))
		}
		for _, p := range td.Partitions.Sorted() {
			if len(p.Replicas) != ClusterSize {
				t.Errorf("%s/%d has replicas %v, want %d", td.Topic, p.Partition, p.Replicas, ClusterSize)
			}
		}
	}
	cfgs, err := adm.DescribeTopicConfigs(ctx, topic, "__consumer_offsets", "__transaction_state")
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range cfgs {
		for _, name := range []string{"min.insync.replicas", "unclean.leader.election.enable"} {
			want := map[string]string{"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}[name]
			var v string
			for _, cfg := range rc.Configs {
				if cfg.Key == name && cfg.Value != nil {
					v = *cfg.Value
				}
			}
			if v != want {
				t.Errorf("%s: %s = %q, want %q", rc.Name, name, v, want)
			}
		}
	}

	leader, err := c.QuorumLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Node(leader).Kill(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed node %d, the quorum leader", leader)
	var next int32
	for deadline := time.Now().Add(time.Minute); ; {
		if next, err = c.QuorumLeader(ctx); err == nil && next != leader {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no other quorum leader than the killed node %d within a minute (last %d, %v)", leader, next, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("node %d leads the quorum", next)
	commit("one-down", 30)
	read(60)

	if err := c.Node(leader).Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d back in %s; every replica in sync", leader, c.Node(leader).StartupTime().Round(time.Millisecond))
	commit("after", 30)
	read(90)
	for v, n := range got {
		if n != 1 {
			t.Errorf("record %s read %d times", v, n)
		}
	}
}
