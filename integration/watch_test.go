package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// TestWatchPostQuarantineExactlyOnce runs the real binary on the default
// flags over a planted case (cloudtrailgen.PlantCase, its quarantine half
// an hour ago): the quarantine's alert opens a watch of the user, which the
// instance's loader applies ("watch applied", logged once the matcher has
// it). Then the user's later activity arrives on every source partition:
// a successful call per partition, a new access key for the user, the
// quarantine policy detached, and a call the quarantine denied. Each but
// the denied one must be one post-quarantine alert, of the rule its
// declaration says, naming the opening alert, exactly once to a
// read_committed reader; the denied call none. Then the process is
// stopped, the user calls again on every partition, and a new process
// (same transactional id) starts on those records: its loader must have
// the watch before it polls, and each call is one alert again.
func TestWatchPostQuarantineExactlyOnce(t *testing.T) {
	b := kafka.Broker(t)
	p := newPipeline(t)
	adm := newAdmin(t, b)
	p.create(t, b, adm, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	quarantine := time.Now().UTC().Add(-30 * time.Minute).Truncate(time.Second)
	c := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 13, Noise: 600, Quarantine: quarantine})
	opening := producer.AlertID(matcher.ElasticQuarantineRule.ID, c.QuarantineEventID)

	a := startInstance(t, "a", kafkatest.Name(t, "txn-a"), serviceArgs(b, p.source, p.alerts, p.group))
	w := newSourceWriter(t, b, p.source)
	if _, err := w.write(ctx, c.Values, nil); err != nil {
		t.Fatal(err)
	}
	waitLogged(t, a, "watch applied", opening, 2*time.Minute)

	// The user's activity after the watch is applied: what each event must
	// give, written by hand from the rules' declarations (docs/rules.md).
	type later struct {
		id, rule string // rule "" for no finding
		value    []byte
	}
	at := quarantine.Add(20 * time.Minute).Format(time.RFC3339)
	user, account := cloudtrailgen.CaseUserName, cloudtrailgen.CaseAccount
	byUser := `{"type":"IAMUser","principalId":"AIDAWATCHTEST","arn":"arn:aws:iam::` + account + `:user/` + user +
		`","accountId":"` + account + `","accessKeyId":"AKIAWATCHTEST0000001","userName":"` + user + `"}`
	byAdmin := `{"type":"IAMUser","principalId":"AIDAWATCHADMIN","arn":"arn:aws:iam::` + account + `:user/admin","accountId":"` + account +
		`","accessKeyId":"AKIAWATCHADMIN000001","userName":"admin"}`
	event := func(id, identity, source, name, params, errorCode string) []byte {
		errPart := ""
		if errorCode != "" {
			errPart = `"errorCode":"` + errorCode + `","errorMessage":"denied by AWSCompromisedKeyQuarantineV3",`
		}
		return []byte(`{"eventVersion":"1.08","userIdentity":` + identity + `,"eventTime":"` + at + `","eventSource":"` + source +
			`","eventName":"` + name + `","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2.15.0",` +
			`"requestParameters":` + params + `,` + errPart + `"responseElements":null,"eventID":"` + id +
			`","eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"` + account + `"}`)
	}
	var events []later
	var partitions []int32
	for part := range int32(sourcePartitions) {
		id := fmt.Sprintf("0a7c0000-0000-4000-8000-%012d", part)
		events = append(events, later{id, matcher.PostQuarantineActivityRule.ID, event(id, byUser, "s3.amazonaws.com", "ListBuckets", "null", "")})
		partitions = append(partitions, part)
	}
	onUser := `{"userName":"` + user + `"}`
	for _, e := range []later{
		{"0a7c0000-0000-4000-8000-100000000001", matcher.PostQuarantinePersistenceRule.ID, event("0a7c0000-0000-4000-8000-100000000001", byAdmin, "iam.amazonaws.com", "CreateAccessKey", onUser, "")},
		{"0a7c0000-0000-4000-8000-100000000002", matcher.PostQuarantineDefenseEvasionRule.ID, event("0a7c0000-0000-4000-8000-100000000002", byAdmin, "iam.amazonaws.com", "DetachUserPolicy",
			`{"userName":"`+user+`","policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"}`, "")},
		{"0a7c0000-0000-4000-8000-100000000003", "", event("0a7c0000-0000-4000-8000-100000000003", byUser, "iam.amazonaws.com", "CreateUser", `{"userName":"backdoor"}`, "AccessDenied")},
	} {
		events = append(events, e)
		partitions = append(partitions, int32(len(partitions))%sourcePartitions)
	}
	values := make([][]byte, len(events))
	for i, e := range events {
		values[i] = e.value
	}
	if _, err := w.write(ctx, values, partitions); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, a)
	stopAll(t, a)
	checkUnplanned(t, a)

	// After a restart: the user's calls are already waiting when the new
	// process starts, so they are reported only if its loader has the
	// entry before its first poll.
	values, partitions = values[:0], partitions[:0]
	for part := range int32(sourcePartitions) {
		id := fmt.Sprintf("0a7c0000-0000-4000-8000-2000000000%02d", part)
		e := later{id, matcher.PostQuarantineActivityRule.ID, event(id, byUser, "sts.amazonaws.com", "GetCallerIdentity", "null", "")}
		events = append(events, e)
		values, partitions = append(values, e.value), append(partitions, part)
	}
	if _, err := w.write(ctx, values, partitions); err != nil {
		t.Fatal(err)
	}
	r := startInstance(t, "restarted", kafkatest.Name(t, "txn-a"), serviceArgs(b, p.source, p.alerts, p.group))
	waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, r)
	stopAll(t, r)
	checkUnplanned(t, r)

	// Every alert, read_committed, by event id and rule.
	writeEndMarkers(t, b, p.alerts)
	cl := newClient(t, b, kgo.ConsumeTopics(p.alerts), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond))
	type alert struct{ event, rule, watch string }
	seen := map[alert]int{}
	markers := map[int32]bool{}
	for len(markers) < outputPartitions {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: end markers of %d of %d partitions seen", p.alerts, len(markers), outputPartitions)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == endMarker {
				markers[r.Partition] = true
				return
			}
			var doc struct {
				Event struct {
					ID string `json:"id"`
				} `json:"event"`
				Rule struct {
					ID string `json:"id"`
				} `json:"rule"`
				QuarantineWatch struct {
					Watch *struct {
						AlertID string `json:"alert_id"`
					} `json:"watch"`
				} `json:"quarantine_watch"`
			}
			if err := json.Unmarshal(r.Value, &doc); err != nil {
				t.Fatalf("alert %s is not JSON: %v", r.Key, err)
			}
			a := alert{event: doc.Event.ID, rule: doc.Rule.ID}
			if doc.QuarantineWatch.Watch != nil {
				a.watch = doc.QuarantineWatch.Watch.AlertID
			}
			seen[a]++
		})
	}

	found, duplicates, wrong := 0, 0, 0
	for _, e := range events {
		if e.rule == "" {
			continue
		}
		switch n := seen[alert{e.id, e.rule, opening}]; {
		case n == 1:
			found++
		case n > 1:
			duplicates += n - 1
			t.Errorf("event %s: %d alerts of rule %s, want 1", e.id, n, e.rule)
		default:
			t.Errorf("event %s: no alert of rule %s naming the opening alert %s", e.id, e.rule, opening)
		}
	}
	mine := map[string]later{}
	for _, e := range events {
		mine[e.id] = e
	}
	planted := 0
	for a, n := range seen {
		e, isMine := mine[a.event]
		switch {
		case a.rule == matcher.ElasticQuarantineRule.ID && a.event == c.QuarantineEventID:
			if n != 1 {
				t.Errorf("the quarantine's alert: %d copies, want 1", n)
			}
		case isMine && e.rule == a.rule && a.watch == opening:
			// counted above
		case !isMine && a.watch == opening && n == 1:
			// The planted case's own later call (PlantCase's +10 min), read
			// before or after the watch was applied: at most once.
			planted++
		default:
			wrong += n
			t.Errorf("unexpected alert %+v, %d copies", a, n)
		}
	}
	line := fmt.Sprintf("watch-post: post_findings=%d/%d (%d after a restart) duplicates=%d unexpected=%d planted_later=%d",
		found, len(events)-1, sourcePartitions, duplicates, wrong, planted)
	t.Log(line)
	fmt.Println(line)
}
