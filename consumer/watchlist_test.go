package consumer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
)

const (
	watchlistTopic = alertsTopic + ".watchlist"
	contextTopic   = alertsTopic + ".context"
)

// watchConfig is memberConfig with the watch on, as the command's
// defaults have it.
func watchConfig(t *testing.T, brokers []string, id int) Config {
	cfg := memberConfig(t, brokers, id)
	cfg.WatchFor = DefaultWatchFor
	cfg.Metrics = telemetry.New()
	return cfg
}

func adminOf(t *testing.T, brokers []string, opts ...kgo.Opt) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func createTopic(t *testing.T, adm *kadm.Client, topic string, configs map[string]*string) {
	t.Helper()
	resp, err := adm.CreateTopic(context.Background(), 3, -1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("creating %s: %v", topic, err)
	}
}

func cleanupPolicy(t *testing.T, adm *kadm.Client, topic string) string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		t.Fatalf("describing %s: %v", topic, err)
	}
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil {
			return *c.Value
		}
	}
	return ""
}

// runToError runs a member that must stop at start-up and returns its error.
func runToError(t *testing.T, cfg Config) error {
	t.Helper()
	cfg.StartupTimeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Run(ctx, cfg)
	if err == nil {
		t.Fatal("Run returned nil: the start-up let it through")
	}
	return err
}

// TestWatchlistTopicsAtStartup: with the watch on (the default), start-up
// needs the watchlist topic compacted, readable and writable, and the
// context topic writable; --create-topics creates them so; with the watch
// off neither is needed.
func TestWatchlistTopicsAtStartup(t *testing.T) {
	t.Run("created", func(t *testing.T) {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, sourceTopic))
		if err != nil {
			t.Fatal(err)
		}
		defer cluster.Close()
		cfg := watchConfig(t, cluster.ListenAddrs(), 1)
		cfg.CreateTopics = true
		m := startMember(t, cfg)
		waitReady(t, cfg, m)
		if err := m.stop(t); err != nil {
			t.Fatal(err)
		}
		adm := adminOf(t, cluster.ListenAddrs())
		topics, err := adm.ListTopics(context.Background(), watchlistTopic, contextTopic)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{watchlistTopic, contextTopic} {
			if td, ok := topics[name]; !ok || td.Err != nil || len(td.Partitions) != DefaultTopicPartitions {
				t.Errorf("%s: %+v, want %d partitions", name, td, DefaultTopicPartitions)
			}
		}
		if p := cleanupPolicy(t, adm, watchlistTopic); p != "compact" {
			t.Errorf("watchlist created with cleanup.policy %q, want compact", p)
		}
		if p := cleanupPolicy(t, adm, contextTopic); strings.Contains(p, "compact") {
			t.Errorf("context topic created with cleanup.policy %q, want the broker's (delete)", p)
		}
	})
	t.Run("missing", func(t *testing.T) {
		cluster := newCluster(t)
		err := runToError(t, watchConfig(t, cluster.ListenAddrs(), 1))
		for _, want := range []string{`watchlist topic "` + watchlistTopic + `" does not exist`, `output topic "` + contextTopic + `" does not exist`, "--create-topics"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not say %s: %v", want, err)
			}
		}
	})
	t.Run("not compacted", func(t *testing.T) {
		cluster := newCluster(t)
		adm := adminOf(t, cluster.ListenAddrs())
		createTopic(t, adm, watchlistTopic, nil)
		createTopic(t, adm, contextTopic, nil)
		err := runToError(t, watchConfig(t, cluster.ListenAddrs(), 1))
		if !strings.Contains(err.Error(), `watchlist topic "`+watchlistTopic+`" has cleanup.policy=`) || !strings.Contains(err.Error(), "must be compact") {
			t.Errorf("want an error naming the watchlist's cleanup.policy, got %v", err)
		}
	})
	t.Run("compacted", func(t *testing.T) {
		cluster := newCluster(t)
		adm := adminOf(t, cluster.ListenAddrs())
		createTopic(t, adm, watchlistTopic, map[string]*string{"cleanup.policy": kmsg.StringPtr("compact")})
		createTopic(t, adm, contextTopic, nil)
		cfg := watchConfig(t, cluster.ListenAddrs(), 1)
		m := startMember(t, cfg)
		waitReady(t, cfg, m)
		if err := m.stop(t); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("off", func(t *testing.T) {
		cluster := newCluster(t) // no watchlist, no context topic
		cfg := memberConfig(t, cluster.ListenAddrs(), 1)
		cfg.Metrics = telemetry.New()
		cfg.WatchFor = 0
		m := startMember(t, cfg)
		waitReady(t, cfg, m)
		if err := m.stop(t); err != nil {
			t.Fatalf("with the watch off: %v", err)
		}
	})
	t.Run("watchlist not readable", func(t *testing.T) {
		acls := everyRight()
		acls["write watchlist"] = allow(kmsg.ACLResourceTypeTopic, watchlistTopic, kmsg.ACLOperationWrite)
		acls["write context"] = allow(kmsg.ACLResourceTypeTopic, contextTopic, kmsg.ACLOperationWrite)
		cluster := aclCluster(t, acls)
		adm := adminOf(t, cluster.ListenAddrs(), saslOpt("admin", "admin-password"))
		createTopic(t, adm, watchlistTopic, map[string]*string{"cleanup.policy": kmsg.StringPtr("compact")})
		createTopic(t, adm, contextTopic, nil)
		cfg := watchConfig(t, cluster.ListenAddrs(), 1)
		cfg.ClientOpts = append(cfg.ClientOpts, saslOpt(testUser, testPassword))
		err := runToError(t, cfg)
		if !strings.Contains(err.Error(), `watchlist topic "`+watchlistTopic+`": not authorized to read it`) || !strings.Contains(err.Error(), "grant the user Read") {
			t.Errorf("want an error asking for Read on the watchlist, got %v", err)
		}
	})
}
