package consumer

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
)

const (
	testUser     = "watcher"
	testPassword = "watcher-password"
)

// allow is an ALLOW ACL of the test user.
func allow(res kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
	pattern := kmsg.ACLResourcePatternTypeLiteral
	if strings.HasSuffix(name, "*") && name != "*" {
		pattern, name = kmsg.ACLResourcePatternTypePrefixed, strings.TrimSuffix(name, "*")
	}
	return kfake.ACL{Resource: res, Name: name, Pattern: pattern, Operation: op, Allow: true}
}

// everyRight is what the service needs, by the README: Read on the source
// topics and the group, Write on the outputs, Write on its transactional
// id, IdempotentWrite on the cluster.
func everyRight() map[string]kfake.ACL {
	return map[string]kfake.ACL{
		"read source":  allow(kmsg.ACLResourceTypeTopic, sourceTopic, kmsg.ACLOperationRead),
		"write alerts": allow(kmsg.ACLResourceTypeTopic, alertsTopic, kmsg.ACLOperationWrite),
		"write dlq":    allow(kmsg.ACLResourceTypeTopic, dlqTopic, kmsg.ACLOperationWrite),
		"read group":   allow(kmsg.ACLResourceTypeGroup, "quarantine-watch", kmsg.ACLOperationRead),
		"write txn":    allow(kmsg.ACLResourceTypeTransactionalId, "quarantine-watch-*", kmsg.ACLOperationWrite),
		"idempotent":   allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLOperationIdempotentWrite),
	}
}

// aclCluster is a cluster that checks ACLs, with an admin superuser and the
// test user holding acls.
func aclCluster(t *testing.T, acls map[string]kfake.ACL) *kfake.Cluster {
	t.Helper()
	var list []kfake.ACL
	for _, a := range acls {
		list = append(list, a)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("SCRAM-SHA-512", "admin", "admin-password"),
		kfake.User("SCRAM-SHA-512", testUser, testPassword, list...),
		kfake.SeedTopics(3, sourceTopic, alertsTopic, dlqTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func saslOpt(user, pass string) kgo.Opt {
	return kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism())
}

// TestStartupNamesMissingRights: with one right of the README's list
// missing, Run stops at start-up, within the start-up timeout, with an
// error that names the resource, the broker's error code and the right to
// grant, instead of starting a session that stalls.
func TestStartupNamesMissingRights(t *testing.T) {
	for _, c := range []struct {
		name    string
		drop    string
		replace *kfake.ACL
		want    []string
	}{
		{"source not described", "read source", nil,
			[]string{`"cloudtrail"`, "TOPIC_AUTHORIZATION_FAILED", "Read"}},
		{"source described, not read", "read source", new(allow(kmsg.ACLResourceTypeTopic, sourceTopic, kmsg.ACLOperationDescribe)),
			[]string{`"cloudtrail"`, "Read"}},
		{"alerts not written", "write alerts", new(allow(kmsg.ACLResourceTypeTopic, alertsTopic, kmsg.ACLOperationDescribe)),
			[]string{`"quarantine-alerts"`, "Write"}},
		{"dlq not described", "write dlq", nil,
			[]string{`"quarantine-alerts.dlq"`, "TOPIC_AUTHORIZATION_FAILED", "Write"}},
		{"group", "read group", nil,
			[]string{`"quarantine-watch"`, "GROUP_AUTHORIZATION_FAILED", "Read"}},
		{"transactional id", "write txn", nil,
			[]string{`"quarantine-watch-1"`, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", "Write"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			acls := everyRight()
			delete(acls, c.drop)
			if c.replace != nil {
				acls[c.drop] = *c.replace
			}
			cluster := aclCluster(t, acls)
			cfg := memberConfig(t, cluster.ListenAddrs(), 1)
			cfg.ClientOpts = append(cfg.ClientOpts, saslOpt(testUser, testPassword))
			cfg.StartupTimeout = 10 * time.Second
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			began := time.Now()
			err := Run(ctx, cfg)
			took := time.Since(began)
			if err == nil {
				t.Fatalf("Run returned nil after %v (the start-up did not notice; the session ran until the test's deadline)", took.Round(time.Millisecond))
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %s: %v", w, err)
				}
			}
			if took > cfg.StartupTimeout+2*time.Second {
				t.Errorf("took %v, over the start-up timeout %v", took.Round(time.Millisecond), cfg.StartupTimeout)
			}
		})
	}

	t.Run("every right", func(t *testing.T) {
		cluster := aclCluster(t, everyRight())
		cfg := memberConfig(t, cluster.ListenAddrs(), 1)
		cfg.ClientOpts = append(cfg.ClientOpts, saslOpt(testUser, testPassword))
		m := startMember(t, cfg)
		admin, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), saslOpt("admin", "admin-password"))
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		loadSource(t, admin, 200, cloudtrailgen.Config{Seed: 21, QuarantineRate: 0.01})
		waitCommitted(t, kadm.NewClient(admin), "quarantine-watch", time.Minute)
		if err := m.stop(t); err != nil {
			t.Fatalf("with every right: %v", err)
		}
	})
}

// TestStartupRefusesUnsafeTopics: a source that is also an output would
// feed on its own alerts (an ECS alert matches the rule itself), and a
// compacted source drops records before they are read, unless asked to
// allow it.
func TestStartupRefusesUnsafeTopics(t *testing.T) {
	t.Run("source is an output", func(t *testing.T) {
		for _, sources := range [][]string{{sourceTopic, alertsTopic}, {dlqTopic}} {
			cfg := memberConfig(t, []string{"127.0.0.1:1"}, 1)
			cfg.SourceTopics = sources
			err := Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), "both a source and an output") {
				t.Errorf("sources %v: %v", sources, err)
			}
		}
	})
	t.Run("compacted source", func(t *testing.T) {
		cluster := newCluster(t)
		cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		compact := "compact,delete"
		if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 3, -1, map[string]*string{"cleanup.policy": &compact}, "compacted"); err != nil {
			t.Fatal(err)
		}
		cfg := memberConfig(t, cluster.ListenAddrs(), 1)
		cfg.SourceTopics = []string{"compacted"}
		cfg.StartupTimeout = 10 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = Run(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), `"compacted"`) || !strings.Contains(err.Error(), "cleanup.policy") {
			t.Fatalf("want an error naming the compacted source and its cleanup.policy, got %v", err)
		}
		cfg.AllowCompactedSource = true
		cfg.Metrics = telemetry.New()
		m := startMember(t, cfg)
		waitReady(t, cfg, m)
		if err := m.stop(t); err != nil {
			t.Fatalf("with AllowCompactedSource: %v", err)
		}
	})
}

// waitReady polls until the member has joined its group, or fails if it
// exits first.
func waitReady(t *testing.T, cfg Config, m *member) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cfg.Metrics.Ready() {
		select {
		case err := <-m.done:
			t.Fatalf("member exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("member not ready within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCreateTopicsReplication: --create-topics asks for min(3, brokers)
// replicas and, with 3 or more, min.insync.replicas=2, unless configured;
// a request with replication factor -1 would take the broker's default,
// which is 1 unless the operator changed it.
func TestCreateTopicsReplication(t *testing.T) {
	two, one := int16(2), "1"
	for _, c := range []struct {
		name         string
		brokers      int
		rf           int16
		minISR       string
		wantRF       int16
		wantMinISR   string // "" for none sent
		wantPartsNum int32
	}{
		{"three brokers", 3, 0, "", 3, "2", DefaultTopicPartitions},
		{"five brokers", 5, 0, "", 3, "2", DefaultTopicPartitions},
		{"two brokers", 2, 0, "", 2, "", DefaultTopicPartitions},
		{"one broker", 1, 0, "", 1, "", DefaultTopicPartitions},
		{"configured", 3, two, one, 2, "1", DefaultTopicPartitions},
	} {
		t.Run(c.name, func(t *testing.T) {
			cluster, err := kfake.NewCluster(kfake.NumBrokers(c.brokers), kfake.SeedTopics(3, sourceTopic))
			if err != nil {
				t.Fatal(err)
			}
			defer cluster.Close()
			var mu sync.Mutex
			type created struct {
				rf     int16
				parts  int32
				minISR *string
			}
			got := map[string]created{}
			cluster.ControlKey(int16(kmsg.CreateTopics), func(req kmsg.Request) (kmsg.Response, error, bool) {
				cluster.KeepControl()
				mu.Lock()
				defer mu.Unlock()
				for _, rt := range req.(*kmsg.CreateTopicsRequest).Topics {
					c := created{rf: rt.ReplicationFactor, parts: rt.NumPartitions}
					for _, rc := range rt.Configs {
						if rc.Name == "min.insync.replicas" {
							c.minISR = rc.Value
						}
					}
					got[rt.Topic] = c
				}
				return nil, nil, false
			})
			cfg := memberConfig(t, cluster.ListenAddrs(), 1)
			cfg.CreateTopics = true
			cfg.CreateTopicsReplication = c.rf
			cfg.CreateTopicsMinInsyncReplicas = c.minISR
			cfg.Metrics = telemetry.New()
			m := startMember(t, cfg)
			waitReady(t, cfg, m)
			if err := m.stop(t); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, topic := range []string{alertsTopic, dlqTopic} {
				g, ok := got[topic]
				if !ok {
					t.Errorf("%s: not created", topic)
					continue
				}
				gotISR := ""
				if g.minISR != nil {
					gotISR = *g.minISR
				}
				if g.rf != c.wantRF || gotISR != c.wantMinISR || g.parts != c.wantPartsNum {
					t.Errorf("%s created with replication factor %d, min.insync.replicas %q, %d partitions; want %d, %q, %d",
						topic, g.rf, gotISR, g.parts, c.wantRF, c.wantMinISR, c.wantPartsNum)
				}
			}
		})
	}
}
