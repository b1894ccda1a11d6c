package consumer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
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
	cfg.TransactionsV2 = true // the command's default
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
		var log lockedBuffer
		cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
		m := startMember(t, cfg)
		waitReady(t, cfg, m)
		// A record read and committed: the member was assigned its
		// partitions, and its assignment gate has run.
		adm := adminOf(t, cluster.ListenAddrs())
		cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: sourceTopic, Value: readSample(t, "04_assume_role_awsservice_elastic_integrations.json")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		waitCommitted(t, adm, cfg.Group, 30*time.Second)
		if err := m.stop(t); err != nil {
			t.Fatal(err)
		}
		// The topics were described before they were created, and
		// franz-go keeps that answer (UNKNOWN_TOPIC_OR_PARTITION) for
		// kadm's requests: the gate must not take it for the topic's.
		if strings.Contains(log.String(), "assignment gate") {
			t.Errorf("the assignment gate did not find the watchlist it had just created:\n%s", log.String())
		}
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

// watchCluster is a cluster with every topic the watch needs, the
// watchlist compacted.
func watchCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	cluster := newCluster(t)
	adm := adminOf(t, cluster.ListenAddrs())
	createTopic(t, adm, watchlistTopic, map[string]*string{"cleanup.policy": kmsg.StringPtr("compact")})
	createTopic(t, adm, contextTopic, nil)
	return cluster
}

// readTopic reads topic from the start, read_committed or not, up to end
// markers it writes to each partition first (outside any transaction), and
// returns the records other than the markers. Nothing may be writing the
// topic transactionally meanwhile: a read_committed reader would wait.
func readTopic(t *testing.T, brokers []string, topic string, committed bool) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	writer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	topics, err := kadm.NewClient(writer).ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	pending := map[int32]bool{}
	for p := range topics[topic].Partitions {
		pending[p] = true
		if err := writer.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Key: []byte(endMarker)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	isolation := kgo.ReadUncommitted()
	if committed {
		isolation = kgo.ReadCommitted()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(isolation),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(pending) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: no end marker yet from partitions %v", topic, pending)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == endMarker {
				delete(pending, r.Partition)
				return
			}
			out = append(out, r)
		})
	}
	return out
}

// TestWatchEntryInTheAlertsTransaction: the watch entry a quarantine opens
// is written in the transaction of its alert. While every commit is
// refused the batch is aborted and read again, each time writing alert and
// entry anew: a read_committed reader sees neither, a read_uncommitted one
// sees the aborted copies. Once commits go through, read_committed sees
// one alert and one entry, and the entry is the one the plan's encoding
// says, for the sample's user, account and event time.
func TestWatchEntryInTheAlertsTransaction(t *testing.T) {
	cluster := watchCluster(t)
	brokers := cluster.ListenAddrs()
	var refuse refuser
	refuse.install(cluster, kerr.ConcurrentTransactions.Code)
	refuse.set(true)

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: sourceTopic, Value: readSample(t, "02_attach_user_policy_quarantine_v2_panther.json")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	cfg := watchConfig(t, brokers, 1)
	m := startMember(t, cfg)
	deadline := time.Now().Add(30 * time.Second)
	for refuse.count() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d aborts within 30 s, want 2", refuse.count())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}
	aborted := len(readTopic(t, brokers, watchlistTopic, false))
	if aborted < 2 {
		t.Fatalf("read_uncommitted: %d watch entries after %d aborted transactions, want one per transaction", aborted, refuse.count())
	}
	for _, topic := range []string{alertsTopic, watchlistTopic} {
		if got := readTopic(t, brokers, topic, true); len(got) != 0 {
			t.Errorf("read_committed: %s holds %d records after aborted transactions only, want none", topic, len(got))
		}
	}

	refuse.set(false)
	cfg.Metrics = telemetry.New()
	m = startMember(t, cfg)
	waitCommitted(t, adminOf(t, brokers), "quarantine-watch", 30*time.Second)
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}
	alerts := readTopic(t, brokers, alertsTopic, true)
	// The topic also holds the loop's markers (nogap.go) once the entry
	// is loaded: entries only.
	var entries []*kgo.Record
	for _, r := range readTopic(t, brokers, watchlistTopic, true) {
		if bytes.HasPrefix(r.Key, []byte(producer.WatchKeyPrefix)) {
			entries = append(entries, r)
		}
	}
	const alertID = "f013ee106138a6679ea2239fd7d4df0c2c2598ee04faabd009259725bfcbd0fd" // producer's golden
	if len(alerts) != 1 || string(alerts[0].Key) != alertID {
		t.Fatalf("read_committed: %d alerts (%v), want one, %s", len(alerts), alerts, alertID)
	}
	if len(entries) != 1 {
		t.Fatalf("read_committed: %d watch entries, want one", len(entries))
	}
	if key := string(entries[0].Key); key != "entry/123456789012/test-user" {
		t.Errorf("entry key %q", key)
	}
	var entry map[string]any
	if err := json.Unmarshal(entries[0].Value, &entry); err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]any{
		"schema": 1.0, "account": "123456789012", "user_name": "test-user", "alert_id": alertID,
		"rule_id": "0b79f5c0-2c31-4fea-86cd-e62644278205", "opened_at": "2023-11-21T23:23:52Z",
		"until": "2023-11-24T23:23:52Z", "lookback": "24h0m0s",
	} {
		if entry[field] != want {
			t.Errorf("entry %s = %v, want %v", field, entry[field], want)
		}
	}
	if got := value(t, cfg.Metrics.WatchEntries.WithLabelValues("written")); got != 1 {
		t.Errorf("watch_entries_total{outcome=written} = %v after the commit, want 1", got)
	}
	if all := len(readTopic(t, brokers, watchlistTopic, false)); all < aborted+1 {
		t.Errorf("read_uncommitted: %d entries, want the %d aborted and the committed one", all, aborted)
	}
}

// watchRecordJSON is a watch entry's value as the plan writes it, by hand.
func watchRecordJSON(user, opened, until string) []byte {
	sum := sha256.Sum256([]byte(user))
	return []byte(`{"schema":1,"account":"123456789012","user_name":"` + user + `","alert_id":"` + hex.EncodeToString(sum[:]) +
		`","rule_id":"0b79f5c0-2c31-4fea-86cd-e62644278205","opened_at":"` + opened + `","until":"` + until +
		`","source":{"topic":"cloudtrail","partition":0,"offset":1,"timestamp":"` + opened + `"},"lookback":"24h0m0s"}`)
}

// writeWatchlist writes records to the watchlist in one transaction,
// committed or aborted.
func writeWatchlist(t *testing.T, brokers []string, id string, commit bool, recs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(id), kgo.DefaultProduceTopic(watchlistTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		t.Fatal(err)
	}
}

// entryRecord is user's watch entry, written when it was opened, as a
// live stream's finding writes it.
func entryRecord(user, opened, until string) *kgo.Record {
	written, err := time.Parse(time.RFC3339, opened)
	if err != nil {
		panic(err)
	}
	return &kgo.Record{Key: []byte("entry/123456789012/" + strings.ToLower(user)), Value: watchRecordJSON(user, opened, until), Timestamp: written}
}

// userEvent is a successful call by IAM user user of account
// 123456789012 at eventTime.
func userEvent(user, eventID, eventTime string) []byte {
	return []byte(`{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","principalId":"AIDAEXAMPLE","arn":"arn:aws:iam::123456789012:user/` + user +
		`","accountId":"123456789012","accessKeyId":"AKIAIOSFODNN7EXAMPLE","userName":"` + user + `"},"eventTime":"` + eventTime +
		`","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","awsRegion":"us-east-1","sourceIPAddress":"203.0.113.9",` +
		`"userAgent":"aws-cli/2.15.0","requestParameters":null,"responseElements":null,"eventID":"` + eventID +
		`","eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012"}`)
}

func gaugeValue(t *testing.T, g interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var pb dto.Metric
	if err := g.Write(&pb); err != nil {
		t.Fatal(err)
	}
	switch {
	case pb.Gauge != nil:
		return pb.Gauge.GetValue()
	case pb.Counter != nil:
		return pb.Counter.GetValue()
	}
	return -1
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWatchlistLoader: the loader builds the watchlist from the committed
// records of the topic, the latest per user, without tombstoned, expired,
// aborted or invalid entries (the invalid one counted), before the
// instance is ready; the matcher then reports a watched user's calls in
// the latest entry's window, and nobody else's. While running, an entry
// whose window ends is dropped on the timer, and a tombstone ends a watch.
func TestWatchlistLoader(t *testing.T) {
	cluster := watchCluster(t)
	brokers := cluster.ListenAddrs()
	writeWatchlist(t, brokers, "w1", true,
		entryRecord("alice", "2026-11-20T00:00:00Z", "2026-11-23T00:00:00Z"),
		entryRecord("Bob", "2026-11-20T00:00:00Z", "2026-11-23T00:00:00Z"),
		entryRecord("carol", "2026-10-20T00:00:00Z", "2026-10-23T00:00:00Z"), // over
		&kgo.Record{Key: []byte("entry/123456789012/dave"), Value: []byte("not an entry")},
		&kgo.Record{Key: []byte("other/123456789012/alice/cloudtrail/0"), Value: []byte("17")},
		entryRecord("frank", "2026-11-19T00:00:00Z", "2026-11-22T00:00:00Z"),
	)
	writeWatchlist(t, brokers, "w2", false, entryRecord("eve", "2026-11-20T00:00:00Z", "2026-11-23T00:00:00Z"))
	writeWatchlist(t, brokers, "w3", true,
		entryRecord("ALICE", "2026-11-21T00:00:00Z", "2026-11-24T00:00:00Z"), // the latest wins
		&kgo.Record{Key: []byte("entry/123456789012/bob")},                   // a tombstone
	)

	var clock atomic.Int64
	clock.Store(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC).UnixNano())
	cfg := watchConfig(t, brokers, 1)
	cfg.Now = func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	cfg.watchExpiryEvery = 50 * time.Millisecond
	m := startMember(t, cfg)
	waitReady(t, cfg, m)
	// Ready means loaded: no waiting for the gauges.
	if got := gaugeValue(t, cfg.Metrics.WatchlistEntries); got != 2 {
		t.Errorf("watchlist_entries = %v when ready, want 2 (alice, frank)", got)
	}
	if got := gaugeValue(t, cfg.Metrics.WatchlistSkipped); got != 1 {
		t.Errorf("watchlist_skipped_total = %v, want 1 (dave's)", got)
	}
	if got := gaugeValue(t, cfg.Metrics.WatchlistCaughtUp); got != 1 {
		t.Errorf("watchlist_caught_up = %v when ready, want 1", got)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(sourceTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	events := []struct {
		user, id, at string
		finding      bool
	}{
		{"alice", "11111111-0000-4000-8000-000000000001", "2026-11-21T06:00:00Z", true},
		{"alice", "11111111-0000-4000-8000-000000000002", "2026-11-20T12:00:00Z", false}, // the first entry's window only
		{"bob", "11111111-0000-4000-8000-000000000003", "2026-11-21T06:00:00Z", false},
		{"carol", "11111111-0000-4000-8000-000000000004", "2026-10-21T06:00:00Z", false},
		{"eve", "11111111-0000-4000-8000-000000000005", "2026-11-21T06:00:00Z", false},
		{"dave", "11111111-0000-4000-8000-000000000006", "2026-11-21T06:00:00Z", false},
		{"frank", "11111111-0000-4000-8000-000000000007", "2026-11-21T06:00:00Z", true},
	}
	for _, e := range events {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: userEvent(e.user, e.id, e.at)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitCommitted(t, adminOf(t, brokers), "quarantine-watch", 30*time.Second)

	clock.Store(time.Date(2026, 11, 22, 1, 0, 1, 0, time.UTC).UnixNano()) // frank's window and grace are over
	waitFor(t, "frank's entry expired (watchlist_entries 1)", func() bool { return gaugeValue(t, cfg.Metrics.WatchlistEntries) == 1 })
	writeWatchlist(t, brokers, "w4", true, &kgo.Record{Key: []byte("entry/123456789012/alice")})
	waitFor(t, "alice's entry ended by a tombstone (watchlist_entries 0)", func() bool { return gaugeValue(t, cfg.Metrics.WatchlistEntries) == 0 })
	late := "11111111-0000-4000-8000-000000000008"
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: userEvent("alice", late, "2026-11-21T07:00:00Z")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, adminOf(t, brokers), "quarantine-watch", 30*time.Second)
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}

	want := map[string]bool{}
	for _, e := range events {
		if e.finding {
			want[e.id] = true
		}
	}
	hexSum := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	openedBy := map[string]string{events[0].id: hexSum("ALICE"), events[6].id: hexSum("frank")}
	got := map[string]int{}
	for _, r := range readTopic(t, brokers, alertsTopic, true) {
		if rule := header(r, producer.HeaderRuleID); rule != matcher.PostQuarantineActivityRule.ID {
			t.Errorf("alert of rule %s, want only %s", rule, matcher.PostQuarantineActivityRule.ID)
			continue
		}
		var doc struct {
			Event struct {
				ID string `json:"id"`
			} `json:"event"`
			QuarantineWatch struct {
				Watch struct {
					AlertID string `json:"alert_id"`
				} `json:"watch"`
			} `json:"quarantine_watch"`
		}
		if err := json.Unmarshal(r.Value, &doc); err != nil {
			t.Fatal(err)
		}
		got[doc.Event.ID]++
		// The alert names the watch's opening alert: the latest entry's.
		if want := openedBy[doc.Event.ID]; doc.QuarantineWatch.Watch.AlertID != want {
			t.Errorf("event %s: the alert names opening alert %q, want %q", doc.Event.ID, doc.QuarantineWatch.Watch.AlertID, want)
		}
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("event %s: %d post-quarantine alerts, want 1", id, got[id])
		}
	}
	for id, n := range got {
		if !want[id] {
			t.Errorf("event %s: %d post-quarantine alerts, want none", id, n)
		}
	}
}

// TestWatchOfOldEventsOpenedNow: a group that reads a topic's retention
// from the start (a new deployment, a replay) finds quarantines whose event
// time is days old. The watch it opens covers the user's events in its
// event-time window, which are read right after; dropping the entry because
// that window ended before the wall clock's now would miss every one of
// them. An entry lasts its window's length from when it was written.
func TestWatchOfOldEventsOpenedNow(t *testing.T) {
	cluster := watchCluster(t)
	brokers := cluster.ListenAddrs()
	opened := entryRecord("alice", "2024-11-20T00:00:00Z", "2024-11-23T00:00:00Z")
	opened.Timestamp = time.Now()
	writeWatchlist(t, brokers, "w1", true, opened)
	cfg := watchConfig(t, brokers, 1)
	m := startMember(t, cfg)
	waitReady(t, cfg, m)
	if got := gaugeValue(t, cfg.Metrics.WatchlistEntries); got != 1 {
		t.Errorf("watchlist_entries = %v when ready, want 1: alice's watch, opened now over a 2024 window", got)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(sourceTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	id := "11111111-0000-4000-8000-00000000000a"
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: userEvent("alice", id, "2024-11-21T06:00:00Z")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, adminOf(t, brokers), "quarantine-watch", 30*time.Second)
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, r := range readTopic(t, brokers, alertsTopic, true) {
		if header(r, producer.HeaderRuleID) == matcher.PostQuarantineActivityRule.ID && bytes.Contains(r.Value, []byte(id)) {
			found++
		}
	}
	if found != 1 {
		t.Errorf("%d post-quarantine findings of alice's call in the watch's window, want 1", found)
	}
}

// TestWatchlistLoaderFailureStopsRun: an instance whose loader can no
// longer read the watchlist (Read revoked while it runs) stops with an
// error naming the topic, instead of consuming on blind to new watches;
// the orchestrator's restart then fails at start-up naming the right.
func TestWatchlistLoaderFailureStopsRun(t *testing.T) {
	acls := everyRight()
	acls["read watchlist"] = allow(kmsg.ACLResourceTypeTopic, watchlistTopic, kmsg.ACLOperationRead)
	acls["write watchlist"] = allow(kmsg.ACLResourceTypeTopic, watchlistTopic, kmsg.ACLOperationWrite)
	acls["write context"] = allow(kmsg.ACLResourceTypeTopic, contextTopic, kmsg.ACLOperationWrite)
	cluster := aclCluster(t, acls)
	adm := adminOf(t, cluster.ListenAddrs(), saslOpt("admin", "admin-password"))
	createTopic(t, adm, watchlistTopic, map[string]*string{"cleanup.policy": kmsg.StringPtr("compact")})
	createTopic(t, adm, contextTopic, nil)
	cfg := watchConfig(t, cluster.ListenAddrs(), 1)
	cfg.ClientOpts = append(cfg.ClientOpts, saslOpt(testUser, testPassword))
	m := startMember(t, cfg)
	waitReady(t, cfg, m)

	deny := kadm.NewACLs().Deny("User:" + testUser).DenyHosts().Topics(watchlistTopic).Operations(kadm.OpRead)
	if res, err := adm.CreateACLs(context.Background(), deny); err != nil || len(res) == 0 || res[0].Err != nil {
		t.Fatalf("revoking Read on %s: %v %+v", watchlistTopic, err, res)
	}
	select {
	case err := <-m.done:
		if err == nil || !strings.Contains(err.Error(), "watchlist loader") || !strings.Contains(err.Error(), watchlistTopic) ||
			!strings.Contains(err.Error(), "TOPIC_AUTHORIZATION_FAILED") {
			t.Errorf("Run returned %v; want an error naming the watchlist loader, the topic and TOPIC_AUTHORIZATION_FAILED", err)
		}
	case <-time.After(30 * time.Second):
		m.stop(t)
		t.Fatal("still running 30 s after Read on the watchlist was revoked")
	}
}
