package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestWatchlistSubcommand: list shows the committed entries, the latest
// per user, not an aborted one; end writes an end record and a tombstone
// that a read_committed reader (list) sees, and refuses a user not watched.
func TestWatchlistSubcommand(t *testing.T) {
	const topic = "quarantine-alerts.watchlist"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	entry := func(user, opened, until, alertID string) *kgo.Record {
		return &kgo.Record{Key: []byte("entry/123456789012/" + strings.ToLower(user)), Value: []byte(`{"schema":1,"account":"123456789012","user_name":"` + user +
			`","alert_id":"` + strings.Repeat(alertID, 64) + `","rule_id":"0b79f5c0-2c31-4fea-86cd-e62644278205","opened_at":"` + opened +
			`","until":"` + until + `","source":{"topic":"cloudtrail","partition":0,"offset":1,"timestamp":"` + opened + `"},"lookback":"24h0m0s"}`)}
	}
	write := func(id string, commit bool, recs ...*kgo.Record) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx := context.Background()
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
	write("a", true, entry("alice", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z", "a"), entry("Bob", "2099-01-01T00:00:00Z", "2099-01-04T00:00:00Z", "b"))
	write("b", false, entry("eve", "2099-01-01T00:00:00Z", "2099-01-04T00:00:00Z", "e"))
	write("c", true, entry("Alice", "2099-02-01T00:00:00Z", "2099-02-04T00:00:00Z", "c"))

	cmd := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		// Flags before the arguments, as the flag package wants them.
		full := append([]string{"watchlist", args[0], "--brokers", brokers, "--timeout", "20s"}, args[1:]...)
		code := run(full, nil, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, errOut := cmd("list")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := [][]string{
		{"ACCOUNT", "USER", "OPENED_AT", "UNTIL", "STATE", "ALERT_ID"},
		{"123456789012", "Alice", "2099-02-01T00:00:00Z", "2099-02-04T00:00:00Z", "watching", strings.Repeat("c", 64)},
		{"123456789012", "Bob", "2099-01-01T00:00:00Z", "2099-01-04T00:00:00Z", "watching", strings.Repeat("b", 64)},
	}
	if len(lines) != len(want) {
		t.Fatalf("list printed %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d: %q, want %q", i, got, w)
		}
	}

	code, out, errOut = cmd("end", "123456789012", "BOB")
	if code != 0 || !strings.Contains(out, "ended the watch of Bob in account 123456789012") {
		t.Fatalf("end: exit %d, %q %q", code, out, errOut)
	}
	code, out, _ = cmd("list", "--output", "json")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"user_name":"Alice"`) {
		t.Errorf("list after end: exit %d:\n%s", code, out)
	}
	code, _, errOut = cmd("end", "123456789012", "bob")
	if code != 1 || !strings.Contains(errOut, "no such watch") {
		t.Errorf("end of a user not watched: exit %d, %q", code, errOut)
	}
	if code, _, _ := cmd("forget"); code != 2 {
		t.Errorf("an unknown verb: exit %d, want 2", code)
	}
}
