package producer

import (
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// watchedUserCall is a successful call by IAM user test-user of account
// 123456789012, an hour after sample 02 quarantined the user.
const watchedUserCall = `{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","principalId":"AIDAEXAMPLE",` +
	`"arn":"arn:aws:iam::123456789012:user/test-user","accountId":"123456789012","accessKeyId":"AKIAIOSFODNN7EXAMPLE","userName":"test-user"},` +
	`"eventTime":"2023-11-22T00:23:52Z","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","awsRegion":"us-east-1",` +
	`"sourceIPAddress":"203.0.113.9","userAgent":"aws-cli/2.15.0","requestParameters":null,"responseElements":null,` +
	`"eventID":"5d1c2b7a-0000-4000-8000-00000000beef","eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012"}`

// sample02Watch is the watch sample 02's quarantine opens, as the loader
// hands it to the matcher: its alert id is TestAlertIDGolden's.
func sample02Watch() matcher.WatchEntry {
	opened := time.Date(2023, 11, 21, 23, 23, 52, 0, time.UTC)
	return matcher.WatchEntry{Account: "123456789012", UserName: "test-user", OpenedAt: opened, Until: opened.Add(72 * time.Hour),
		AlertID: "f013ee106138a6679ea2239fd7d4df0c2c2598ee04faabd009259725bfcbd0fd"}
}

func watchMatcher(t testing.TB) *matcher.Matcher {
	t.Helper()
	m, err := matcher.New(matcher.Config{Rules: matcher.AllRules})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := matcher.NewWatchlist([]matcher.WatchEntry{sample02Watch()})
	if err != nil {
		t.Fatal(err)
	}
	m.SetWatchlist(wl)
	return m
}

// TestPostQuarantineAlertNamesTheWatch: a post-quarantine alert carries
// the id of the alert that opened the watch, and the watch's user and
// window, in both formats, so that a SIEM joins it to that alert and to
// its context document; the documents still validate.
func TestPostQuarantineAlertNamesTheWatch(t *testing.T) {
	res := watchMatcher(t).NewScanner().Match([]byte(watchedUserCall), nil)
	if res.Err != nil || len(res.Findings) != 1 || res.Findings[0].Rule != matcher.PostQuarantineActivityRule {
		t.Fatalf("findings %+v, err %v: want one of %s", res.Findings, res.Err, matcher.PostQuarantineActivityRule.Key)
	}
	f := res.Findings[0]
	detected := time.Date(2023, 11, 22, 0, 30, 0, 0, time.UTC)
	src := Source{Topic: "cloudtrail", Partition: 1, Offset: 9}
	want := map[string]string{
		"alert_id":  "f013ee106138a6679ea2239fd7d4df0c2c2598ee04faabd009259725bfcbd0fd",
		"account":   "123456789012",
		"user_name": "test-user",
		"opened_at": "2023-11-21T23:23:52Z",
		"until":     "2023-11-24T23:23:52Z",
	}
	for _, tc := range []struct {
		enc    Encoder
		prefix string
	}{
		{ECS{}, "quarantine_watch.watch."},
		{OCSF{}, "unmapped.quarantine_watch.watch."},
	} {
		doc, err := tc.enc.Encode(f, src, detected)
		if err != nil {
			t.Fatal(err)
		}
		if tc.enc.Format() == FormatECS {
			validate(t, doc)
		} else {
			validateOCSF(t, doc)
		}
		m := decode(t, doc)
		for field, v := range want {
			if got, _ := lookup(m, tc.prefix+field); got != v {
				t.Errorf("%s: %s%s = %v, want %s", tc.enc.Format(), tc.prefix, field, got, v)
			}
		}
	}
	// The Elastic rule's alert, which opened the watch, names none.
	q := watchMatcher(t).NewScanner().Match(readSample(t, quarantineV2), nil)
	for _, f := range q.Findings {
		doc, err := ECS{}.Encode(f, src, detected)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := lookup(decode(t, doc), "quarantine_watch.watch"); ok {
			t.Errorf("rule %s: the alert names a watch", f.Rule.Key)
		}
	}
}
