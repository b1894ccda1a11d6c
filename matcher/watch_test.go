package matcher

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
)

var watchOpened = time.Date(2024, 11, 2, 12, 0, 0, 0, time.UTC)

func mustWatchlist(t testing.TB, entries ...WatchEntry) *Watchlist {
	t.Helper()
	w, err := NewWatchlist(entries)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// watchFor is a 72-hour watch opened at watchOpened.
func watchFor(account, user string) WatchEntry {
	return WatchEntry{Account: account, UserName: user, OpenedAt: watchOpened, Until: watchOpened.Add(72 * time.Hour), AlertID: "alert-" + user}
}

func TestNewWatchlist(t *testing.T) {
	ok := watchFor("123456789012", "alice")
	for _, c := range []struct {
		name    string
		entries []WatchEntry
		err     bool
	}{
		{"none", nil, false},
		{"one", []WatchEntry{ok}, false},
		{"IAM's whole alphabet", []WatchEntry{watchFor("123456789012", "a+b=c,d.e@f_g-h0")}, false},
		{"64 characters", []WatchEntry{watchFor("123456789012", strings.Repeat("x", 64))}, false},
		{"65 characters", []WatchEntry{watchFor("123456789012", strings.Repeat("x", 65))}, true},
		{"empty name", []WatchEntry{watchFor("123456789012", "")}, true},
		{"a slash", []WatchEntry{watchFor("123456789012", "a/b")}, true},
		{"a quote", []WatchEntry{watchFor("123456789012", `a"b`)}, true},
		{"a space", []WatchEntry{watchFor("123456789012", "a b")}, true},
		{"non-ASCII", []WatchEntry{watchFor("123456789012", "caf\u00e9")}, true},
		{"account of 11 digits", []WatchEntry{watchFor("12345678901", "alice")}, true},
		{"account with a letter", []WatchEntry{watchFor("12345678901a", "alice")}, true},
		{"empty window", []WatchEntry{{Account: "123456789012", UserName: "alice", OpenedAt: watchOpened, Until: watchOpened}}, true},
		{"no opening time", []WatchEntry{{Account: "123456789012", UserName: "alice", Until: watchOpened}}, true},
		{"the same user twice, another case", []WatchEntry{ok, watchFor("123456789012", "ALICE")}, true},
		{"the same user, windows overlapping by a second", []WatchEntry{ok, {Account: "123456789012", UserName: "Alice",
			OpenedAt: ok.Until.Add(-time.Second), Until: ok.Until.Add(time.Hour)}}, true},
		{"the same user, one window after the other", []WatchEntry{{Account: "123456789012", UserName: "Alice",
			OpenedAt: ok.Until, Until: ok.Until.Add(time.Hour)}, ok}, false},
		{"the same name in two accounts", []WatchEntry{ok, watchFor("210987654321", "alice")}, false},
	} {
		w, err := NewWatchlist(c.entries)
		if (err != nil) != c.err || err != nil && !errors.Is(err, ErrBadWatchEntry) {
			t.Errorf("%s: NewWatchlist: %v, want error %v", c.name, err, c.err)
			continue
		}
		if err == nil && w.Len() != len(c.entries) {
			t.Errorf("%s: Len %d, want %d", c.name, w.Len(), len(c.entries))
		}
	}
}

// watchRecord writes a CloudTrail record; identity and params are JSON
// text ("" leaves them out).
func watchRecord(id, at, source, name, identity, params, recipient, errorCode string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"eventVersion":"1.09","eventTime":%q,"eventSource":%q,"eventName":%q,"eventID":%q,"recipientAccountId":%q`, at, source, name, id, recipient)
	if identity != "" {
		b.WriteString(`,"userIdentity":` + identity)
	}
	if params != "" {
		b.WriteString(`,"requestParameters":` + params)
	}
	if errorCode != "" {
		fmt.Fprintf(&b, `,"errorCode":%q,"errorMessage":"denied"`, errorCode)
	}
	b.WriteString("}")
	return []byte(b.String())
}

func iamUser(account, user string) string {
	return fmt.Sprintf(`{"type":"IAMUser","principalId":"AIDA0EXAMPLE","arn":"arn:aws:iam::%s:user/%s","accountId":%q,"accessKeyId":"AKIA0EXAMPLE","userName":%q}`, account, user, account, user)
}

func TestWatch(t *testing.T) {
	const acct, other = "123456789012", "210987654321"
	alice, bob := watchFor(acct, "Alice"), watchFor(acct, "bob")
	in, before, after := "2024-11-02T13:00:00Z", "2024-11-02T11:59:59Z", "2024-11-05T12:00:01Z"
	admin := iamUser(acct, "ops-admin")
	fed := `{"type":"FederatedUser","arn":"arn:aws:sts::123456789012:federated-user/tmp","accountId":"123456789012","sessionContext":{"sessionIssuer":{"type":"IAMUser","arn":"arn:aws:iam::123456789012:user/alice","accountId":"123456789012","userName":"alice"}}}`
	role := `{"type":"AssumedRole","accountId":"123456789012","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::123456789012:role/alice","accountId":"123456789012","userName":"alice"}}}`
	quarantineARN := `"policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"`
	type want struct {
		rule  string // its Key
		entry string
	}
	evasion, persistence, activity := PostQuarantineDefenseEvasionRule.Key, PostQuarantinePersistenceRule.Key, PostQuarantineActivityRule.Key
	for _, c := range []struct {
		name  string
		value []byte
		want  []want
	}{
		{"a call by the user", watchRecord("e", in, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, ""), []want{{activity, "alice"}}},
		{"the user's name in another case", watchRecord("e", in, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "ALICE"), "", acct, ""), []want{{activity, "alice"}}},
		{"the name escaped", []byte(strings.Replace(string(watchRecord("e", in, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, "")), `"userName":"alice"`, `"userName":"\u0061lice"`, 1)), []want{{activity, "alice"}}},
		{"the key escaped", []byte(strings.Replace(string(watchRecord("e", in, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, "")), `"userName"`, `"user\u004eame"`, 1)), []want{{activity, "alice"}}},
		{"the record in an Agent message", agentEvent(watchRecord("e", in, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, "")), []want{{activity, "alice"}}},
		{"the record gzipped", gz(watchRecord("e", in, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, "")), []want{{activity, "alice"}}},
		{"a call that failed", watchRecord("e", in, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, "AccessDenied"), nil},
		{"before the window", watchRecord("e", before, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, ""), nil},
		{"at the opening (the quarantine itself)", watchRecord("e", "2024-11-02T12:00:00Z", "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, ""), nil},
		{"at the window's end", watchRecord("e", "2024-11-05T12:00:00Z", "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, ""), []want{{activity, "alice"}}},
		{"after the window", watchRecord("e", after, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, ""), nil},
		{"an eventTime that does not parse", watchRecord("e", "yesterday", "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, ""), nil},
		{"the name in another account", watchRecord("e", in, "s3.amazonaws.com", "ListBuckets", iamUser(other, "alice"), "", other, ""), nil},
		{"a longer name", watchRecord("e", in, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice2"), "", acct, ""), nil},
		{"a session the user opened", watchRecord("e", in, "ec2.amazonaws.com", "RunInstances", fed, "", acct, ""), []want{{activity, "alice"}}},
		{"a role named like the user", watchRecord("e", in, "ec2.amazonaws.com", "RunInstances", role, "", acct, ""), nil},
		{"the quarantine detached by an admin", watchRecord("e", in, iamSource, "DetachUserPolicy", admin, `{"userName":"alice",`+quarantineARN+`}`, acct, ""), []want{{evasion, "alice"}}},
		{"the quarantine detached by the user", watchRecord("e", in, iamSource, "DetachUserPolicy", iamUser(acct, "alice"), `{"userName":"alice",`+quarantineARN+`}`, acct, ""), []want{{evasion, "alice"}}},
		{"the detach denied", watchRecord("e", in, iamSource, "DetachUserPolicy", iamUser(acct, "alice"), `{"userName":"alice",`+quarantineARN+`}`, acct, "AccessDenied"), nil},
		{"another policy detached by an admin", watchRecord("e", in, iamSource, "DetachUserPolicy", admin, `{"userName":"alice","policyArn":"arn:aws:iam::aws:policy/ReadOnlyAccess"}`, acct, ""), nil},
		{"an inline policy deleted", watchRecord("e", in, iamSource, "DeleteUserPolicy", admin, `{"userName":"alice","policyName":"deny-all"}`, acct, ""), []want{{evasion, "alice"}}},
		{"the user deletes another user's inline policy", watchRecord("e", in, iamSource, "DeleteUserPolicy", iamUser(acct, "alice"), `{"userName":"carol","policyName":"p"}`, acct, ""), []want{{activity, "alice"}}},
		{"the user detaches the quarantine from another user", watchRecord("e", in, iamSource, "DetachUserPolicy", iamUser(acct, "alice"), `{"userName":"carol",`+quarantineARN+`}`, acct, ""), []want{{activity, "alice"}}},
		{"a key created for the user", watchRecord("e", in, iamSource, "CreateAccessKey", admin, `{"userName":"ALICE"}`, acct, ""), []want{{persistence, "alice"}}},
		{"a key the user created for itself", watchRecord("e", in, iamSource, "CreateAccessKey", iamUser(acct, "alice"), "", acct, ""), []want{{persistence, "alice"}}},
		{"a login profile for the user", watchRecord("e", in, iamSource, "CreateLoginProfile", admin, `{"userName":"alice","passwordResetRequired":false}`, acct, ""), []want{{persistence, "alice"}}},
		{"a password changed", watchRecord("e", in, iamSource, "UpdateLoginProfile", admin, `{"userName":"alice"}`, acct, ""), []want{{persistence, "alice"}}},
		{"a key created for the user in another account", watchRecord("e", in, iamSource, "CreateAccessKey", iamUser(other, "ops"), `{"userName":"alice"}`, other, ""), nil},
		{"userName of another service", watchRecord("e", in, "sso-directory.amazonaws.com", "CreateAccessKey", admin, `{"userName":"alice"}`, acct, ""), nil},
		{"an admin reads the user's keys", watchRecord("e", in, iamSource, "ListAccessKeys", admin, `{"userName":"alice"}`, acct, ""), nil},
		{"an admin deletes the user's key", watchRecord("e", in, iamSource, "DeleteAccessKey", admin, `{"userName":"alice","accessKeyId":"AKIA0EXAMPLE"}`, acct, ""), nil},
		{"the user creates a key for another watched user", watchRecord("e", in, iamSource, "CreateAccessKey", iamUser(acct, "alice"), `{"userName":"bob"}`, acct, ""), []want{{persistence, "alice"}, {persistence, "bob"}}},
		{"the user attaches a policy to another watched user", watchRecord("e", in, iamSource, "AttachUserPolicy", iamUser(acct, "bob"), `{"userName":"alice","policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}`, acct, ""), []want{{activity, "bob"}}},
		{"an unwatched user", watchRecord("e", in, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "carol"), "", acct, ""), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mustNew(t, Config{})
			m.SetWatchlist(mustWatchlist(t, alice, bob))
			res := m.NewScanner().Match(c.value, nil)
			if res.Err != nil {
				t.Fatalf("error %v", res.Err)
			}
			var got []want
			for _, f := range res.Findings {
				if f.Watch == nil || f.Rule.Watch == nil {
					t.Fatalf("finding of %s without a watch entry", f.Rule.Key)
				}
				got = append(got, want{f.Rule.Key, strings.ToLower(f.Watch.UserName)})
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("findings %v, want %v", got, c.want)
			}
			if ref, _ := reference(c.value, m); !slices.Equal(ref, findingsOf(res)) {
				t.Fatalf("reference %v, fast path %v", ref, findingsOf(res))
			}
		})
	}
}

// TestWatchPlantedCase watches the planted case's user from four and a half
// hours before its quarantine, so that the window holds most of the plan,
// and a decoy of the same name in another account, and checks the findings
// against the plan in internal/cloudtrailgen/casefile.go, step by step, read
// from it by hand (the offsets from the quarantine, the event names, and
// which rule each must fire): the generator's own record of the plan is
// not used.
func TestWatchPlantedCase(t *testing.T) {
	c := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 13, Noise: 3000})
	q := c.QuarantineTime
	user := WatchEntry{Account: cloudtrailgen.CaseAccount, UserName: cloudtrailgen.CaseUserName, OpenedAt: q.Add(-4*time.Hour - 30*time.Minute), Until: q.Add(72 * time.Hour)}
	elsewhere := WatchEntry{Account: "444455556666", UserName: "Ledger-Sync", OpenedAt: user.OpenedAt, Until: user.Until}
	decoy := WatchEntry{Account: cloudtrailgen.CaseAccount, UserName: "ledger-sync-old", OpenedAt: user.OpenedAt, Until: user.Until}
	m := mustNew(t, Config{})
	m.SetWatchlist(mustWatchlist(t, user, elsewhere, decoy))
	type want struct {
		off   time.Duration
		name  string
		rule  string
		entry string
	}
	h, mi := time.Hour, time.Minute
	const u, o, d = "123456789012/ledger-sync", "444455556666/ledger-sync", "123456789012/ledger-sync-old"
	wants := []want{
		{-4*h - 20*mi, "GetSecretValue", PostQuarantineActivityRule.Key, u}, // its 4h10 twin failed: no finding
		{-4 * h, "CreateAccessKey", PostQuarantinePersistenceRule.Key, u},   // by ops-admin for the user
		{-3*h - 50*mi, "CreateLoginProfile", PostQuarantinePersistenceRule.Key, u},
		// -3h45 ListAccessKeys by ops-admin on the user: no rule.
		{-3*h - 40*mi, "ListAttachedUserPolicies", PostQuarantineActivityRule.Key, u},
		{-3*h - 30*mi, "GetFederationToken", PostQuarantineActivityRule.Key, u},
		// -3h20 and -3h10: the federated session's issuer has no userName.
		{-3 * h, "AttachUserPolicy", PostQuarantineActivityRule.Key, u}, // on the decoy: no rule for it
		{-2*h - 30*mi, "DescribeRegions", PostQuarantineActivityRule.Key, u},
		{-2*h - 10*mi, "ListBuckets", PostQuarantineActivityRule.Key, u},
		{-2 * h, "ListBuckets", PostQuarantineActivityRule.Key, d},
		{-1*h - 55*mi, "CreateAccessKey", PostQuarantinePersistenceRule.Key, d},
		{-1*h - 50*mi, "ListBuckets", PostQuarantineActivityRule.Key, o},
		{-1*h - 45*mi, "DeleteLoginProfile", PostQuarantineActivityRule.Key, o},
		{-1 * h, "CreateAccessKey", PostQuarantinePersistenceRule.Key, u},
		{10 * mi, "ListBuckets", PostQuarantineActivityRule.Key, u},
	}
	var got []want
	elastic := 0
	s := m.NewScanner()
	for _, v := range c.Values {
		res := s.Match(v, nil)
		if res.Err != nil {
			t.Fatalf("error %v", res.Err)
		}
		if ref, _ := reference(v, m); !slices.Equal(ref, findingsOf(res)) {
			t.Fatalf("value %.200s: reference %v, fast path %v", v, ref, findingsOf(res))
		}
		for _, f := range res.Findings {
			if f.Watch == nil {
				elastic++
				continue
			}
			at, err := time.Parse(time.RFC3339, f.Event.EventTime)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, want{at.Sub(q), f.Event.EventName, f.Rule.Key, f.Watch.Account + "/" + strings.ToLower(f.Watch.UserName)})
		}
	}
	slices.SortStableFunc(got, func(a, b want) int { return int(a.off - b.off) })
	if !slices.Equal(got, wants) {
		t.Errorf("post-quarantine findings:\n got %v\nwant %v", got, wants)
	}
	if elastic != 1 {
		t.Errorf("%d findings of the Elastic rule, want the quarantine's one", elastic)
	}
}

// TestWatchSuccessiveWindows: alice quarantined twice, her watches one
// window after the other (the consumer cuts the first at the second's
// opening). Each call is a finding of the watch whose window holds it,
// never of both.
func TestWatchSuccessiveWindows(t *testing.T) {
	const acct = "123456789012"
	second := watchOpened.Add(10 * time.Hour)
	first := WatchEntry{Account: acct, UserName: "alice", OpenedAt: watchOpened, Until: second, AlertID: "alert-1"}
	later := WatchEntry{Account: acct, UserName: "Alice", OpenedAt: second, Until: second.Add(72 * time.Hour), AlertID: "alert-2"}
	m := mustNew(t, Config{})
	m.SetWatchlist(mustWatchlist(t, later, watchFor("210987654321", "alice"), first))
	for _, c := range []struct {
		at, alert string
	}{
		{"2024-11-02T12:00:00Z", ""}, // the first quarantine itself
		{"2024-11-02T12:00:01Z", "alert-1"},
		{"2024-11-02T22:00:00Z", "alert-1"}, // the second quarantine's time: the first window's end
		{"2024-11-02T22:00:01Z", "alert-2"},
		{"2024-11-05T22:00:00Z", "alert-2"},
		{"2024-11-05T22:00:01Z", ""},
	} {
		v := watchRecord("e", c.at, "s3.amazonaws.com", "ListBuckets", iamUser(acct, "alice"), "", acct, "")
		res := m.NewScanner().Match(v, nil)
		var got []string
		for _, f := range res.Findings {
			got = append(got, f.Watch.AlertID)
		}
		if want := []string{c.alert}; c.alert == "" && len(got) != 0 || c.alert != "" && !slices.Equal(got, want) {
			t.Errorf("a call at %s: findings of %q, want %q", c.at, got, c.alert)
		}
		if ref, _ := reference(v, m); !slices.Equal(ref, findingsOf(res)) {
			t.Errorf("a call at %s: reference %v, fast path %v", c.at, ref, findingsOf(res))
		}
	}
}

// TestWatchOff: without a watchlist, or with an empty one, the same value
// gives no post-quarantine finding, and SetWatchlist(nil) turns a watch off.
func TestWatchOff(t *testing.T) {
	v := watchRecord("e", "2024-11-02T13:00:00Z", "s3.amazonaws.com", "ListBuckets", iamUser("123456789012", "alice"), "", "123456789012", "")
	m := mustNew(t, Config{})
	s := m.NewScanner()
	count := func() int { return len(s.Match(v, nil).Findings) }
	if n := count(); n != 0 || m.Watchlist() != nil {
		t.Fatalf("no watchlist: %d findings", n)
	}
	m.SetWatchlist(mustWatchlist(t, watchFor("123456789012", "alice")))
	if n := count(); n != 1 {
		t.Fatalf("watched: %d findings, want 1", n)
	}
	m.SetWatchlist(mustWatchlist(t))
	if n := count(); n != 0 || m.Watchlist() != nil {
		t.Fatalf("empty watchlist: %d findings", n)
	}
	m.SetWatchlist(mustWatchlist(t, watchFor("123456789012", "alice")))
	m.SetWatchlist(nil)
	if n := count(); n != 0 {
		t.Fatalf("watch turned off: %d findings", n)
	}
}

// TestPostQuarantineRulesNotConfigurable: the post-quarantine rules are on
// with a watchlist; New refuses them in Config.Rules.
func TestPostQuarantineRulesNotConfigurable(t *testing.T) {
	for _, r := range PostQuarantineRules {
		if _, err := New(Config{Rules: []*Rule{ElasticQuarantineRule, r}}); err == nil {
			t.Errorf("New accepted %s in Config.Rules", r.Key)
		}
		if _, err := ParseRules(r.Key); err == nil {
			t.Errorf("ParseRules accepted %s", r.Key)
		}
	}
}

// TestSetWatchlistWhileMatching swaps watchlists while a Pool matches (run
// it with -race): every result is the one of the list before or after a
// swap, never a mix, and never an error.
func TestSetWatchlistWhileMatching(t *testing.T) {
	m := mustNew(t, Config{})
	v := watchRecord("e", "2024-11-02T13:00:00Z", "s3.amazonaws.com", "ListBuckets", iamUser("123456789012", "alice"), "", "123456789012", "")
	values := make([][]byte, 512)
	for i := range values {
		values[i] = v
	}
	lists := []*Watchlist{mustWatchlist(t, watchFor("123456789012", "alice")), mustWatchlist(t, watchFor("123456789012", "bob")), nil}
	p := m.NewPool(2)
	results := make([]Result, len(values))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				m.SetWatchlist(lists[i%len(lists)])
			}
		}
	})
	seen := map[int]int{}
	for range 50 {
		p.Match(values, results)
		for _, r := range results {
			if r.Err != nil || len(r.Findings) > 1 {
				t.Fatalf("result %+v", r)
			}
			seen[len(r.Findings)]++
		}
	}
	close(stop)
	wg.Wait()
	if seen[0] == 0 || seen[1] == 0 {
		t.Logf("findings per value seen: %v (the swaps did not interleave with matching)", seen)
	}
}

// TestWatchStratus watches the IAM users of Stratus Red Team's detonations
// in the public corpus (real CloudTrail) and checks every record, in every
// delivery shape, against findings read by hand from the records: a key or
// login profile made for a watched user is persistence, a call by the
// user, or by the federated session it opened, is activity, a call on the
// user that no rule names (CreateUser, AttachUserPolicy of another policy)
// and a failed one (DeleteLoginProfile) are nothing.
func TestWatchStratus(t *testing.T) {
	wide := func(account, user string) WatchEntry {
		return WatchEntry{Account: account, UserName: user, OpenedAt: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	}
	list := mustWatchlist(t,
		wide("946986569305", "stratus-red-team-backdoor-u-user"),
		wide("229654561268", "malicious-iam-user"),
		wide("229654561268", "christophe"),
		wide("070411556318", "stratus-red-team-login-profile-user"),
		wide("742491224508", "stratus-red-team-user-federation-user"),
		wide("763751499319", "STRATUS-RED-TEAM-UPDATE-LOGIN-PROFILE-USER"),
		wide("562283505220", "stratus-red-team-nmfalu-jfzdtsvchl"),
	)
	type want struct{ file, event, rule, user string }
	wants := []want{
		{"aws.initial-access.console-login-without-mfa.json", "ConsoleLogin", PostQuarantineActivityRule.Key, "stratus-red-team-nmfalu-jfzdtsvchl"},
		{"aws.persistence.iam-backdoor-user.json", "CreateAccessKey", PostQuarantinePersistenceRule.Key, "stratus-red-team-backdoor-u-user"},
		{"aws.persistence.iam-create-admin-user.json", "AttachUserPolicy", PostQuarantineActivityRule.Key, "christophe"},
		{"aws.persistence.iam-create-admin-user.json", "CreateAccessKey", PostQuarantinePersistenceRule.Key, "christophe"},
		{"aws.persistence.iam-create-admin-user.json", "CreateAccessKey", PostQuarantinePersistenceRule.Key, "malicious-iam-user"},
		{"aws.persistence.iam-create-admin-user.json", "CreateUser", PostQuarantineActivityRule.Key, "christophe"},
		{"aws.persistence.iam-create-user-login-profile.json", "CreateLoginProfile", PostQuarantinePersistenceRule.Key, "stratus-red-team-login-profile-user"},
		{"aws.persistence.sts-federation-token.json", "GetCallerIdentity", PostQuarantineActivityRule.Key, "stratus-red-team-user-federation-user"},
		{"aws.persistence.sts-federation-token.json", "GetFederationToken", PostQuarantineActivityRule.Key, "stratus-red-team-user-federation-user"},
		{"aws.privilege-escalation.iam-update-user-login-profile.json", "UpdateLoginProfile", PostQuarantinePersistenceRule.Key, "stratus-red-team-update-login-profile-user"},
	}
	for _, validate := range []bool{false, true} {
		m := mustNew(t, Config{Rules: AllRules, Validate: validate})
		m.SetWatchlist(list)
		s := m.NewScanner()
		for _, shape := range corpusShapes {
			var got []want
			for _, r := range loadCorpus(t) {
				v := shape.wrap(r.raw)
				res := s.Match(v, nil)
				if res.Err != nil {
					t.Fatalf("%s, %s: %v", r.source, shape.name, res.Err)
				}
				if ref, _ := reference(v, m); !slices.Equal(ref, findingsOf(res)) {
					t.Fatalf("%s, %s: reference %v, fast path %v", r.source, shape.name, ref, findingsOf(res))
				}
				for _, f := range res.Findings {
					if f.Watch == nil {
						continue
					}
					file, _, _ := strings.Cut(r.source, " ")
					got = append(got, want{strings.TrimPrefix(file, "stratus/"), f.Event.EventName, f.Rule.Key, strings.ToLower(f.Watch.UserName)})
				}
			}
			slices.SortFunc(got, func(a, b want) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
			if !slices.Equal(got, wants) {
				t.Errorf("validate %v, %s:\n got %v\nwant %v", validate, shape.name, got, wants)
			}
		}
	}
}

// referenceWatchSelects is the decode-everything reference of the watch's
// prefilter, sharing nothing with it: encoding/json decodes the whole text,
// and it selects the text when some object, at any depth, has a member
// "userName" whose value is a string equal to a watched name up to ASCII
// case; a string that is JSON (after trimming white space) is decoded and
// searched the same way, and one that is base64 of gzip is inflated and
// searched.
func referenceWatchSelects(text []byte, names []string, depth int) bool {
	if depth > 8 {
		return false
	}
	var doc any
	if json.Unmarshal(text, &doc) != nil {
		return false
	}
	var walk func(v any) bool
	str := func(s string) bool {
		t := strings.TrimSpace(s)
		if strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
			return referenceWatchSelects([]byte(t), names, depth+1)
		}
		if raw, err := base64.StdEncoding.DecodeString(t); err == nil {
			if zr, err := gzip.NewReader(bytes.NewReader(raw)); err == nil {
				if inflated, err := io.ReadAll(zr); err == nil {
					return referenceWatchSelects(inflated, names, depth+1)
				}
			}
		}
		return false
	}
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			return str(v)
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "userName" && slices.ContainsFunc(names, func(n string) bool { return refASCIILower(n) == refASCIILower(s) }) {
					return true
				}
				if str(k) || walk(x) {
					return true
				}
			}
		case []any:
			for _, x := range v {
				if walk(x) {
					return true
				}
			}
		}
		return false
	}
	return walk(doc)
}

// watchFilterNames are FuzzWatchFilter's names: the planted user, names of
// one letter that are also the letters of whitespace escapes, and IAM's
// punctuation.
var watchFilterNames = []string{"ledger-sync", "t", "N", "r", "Alice.B@example.com", "a+b=c,d_e"}

func TestWatchFilter(t *testing.T) {
	list := make([]WatchEntry, len(watchFilterNames))
	for i, n := range watchFilterNames {
		list[i] = watchFor("123456789012", n)
	}
	p := newPrefilter([][]byte{[]byte(quarantineMarker)}, mustWatchlist(t, list...))
	// A tab between the key and the value two levels down, whose escape's
	// letter is itself escaped at the top: `\\\u0074` is `\t` one level
	// down, a tab the next. Neither the name nor the marker holds a 't'
	// (the set of suspect bytes must have it all the same).
	twoDown := `{"m":` + strconvQuote(`{"x":`+strconvQuote("{\"userName\":\t\"bob\"}")+`}`) + `}`
	if !strings.Contains(twoDown, `\\t`) {
		t.Fatalf("%s holds no escaped tab", twoDown)
	}
	twoDown = strings.Replace(twoDown, `\\t`, `\\\u0074`, 1)
	bob := newPrefilter([][]byte{[]byte("ZZ")}, mustWatchlist(t, watchFor("123456789012", "bob")))
	if !referenceWatchSelects([]byte(twoDown), []string{"bob"}, 0) || !bob.mayMatch([]byte(twoDown)) || !bob.mayMatchSlow([]byte(twoDown)) {
		t.Errorf("%s: the reference selects %v, mayMatch %v, mayMatchSlow %v; want all true", twoDown,
			referenceWatchSelects([]byte(twoDown), []string{"bob"}, 0), bob.mayMatch([]byte(twoDown)), bob.mayMatchSlow([]byte(twoDown)))
	}
	for _, c := range []struct {
		name, text string
		want       bool
	}{
		{"another user", `{"userIdentity":{"userName":"ops-admin"}}`, false},
		{"the user", `{"userIdentity":{"userName":"ledger-sync"}}`, true},
		{"another case", `{"userIdentity":{"userName":"LEDGER-Sync"}}`, true},
		{"white space around the colon", "{\"userName\" :\t\r\n \"ledger-sync\"}", true},
		{"a longer name", `{"userName":"ledger-sync-old"}`, false},
		{"a shorter name", `{"userName":"ledger-syn"}`, false},
		{"the name under another key", `{"roleName":"ledger-sync"}`, false},
		{"the name in a message", `{"message":"{\"userName\":\"ledger-sync\"}"}`, true},
		{"a one-letter name in a message after an escaped tab", `{"message":"{\"userName\":\t\"t\"}"}`, true},
		{"a one-letter name two levels down after an escaped newline", `{"message":"{\"m\":\"{\\\"userName\\\":\\n\\\"N\\\"}\"}"}`, true},
		{"a letter of the name escaped", `{"userName":"\u006cedger-sync"}`, true},
		{"an escape of a letter no name has", `{"userName":"\u0071"}`, false},
		{"the key's letter escaped", `{"user\u004eame":"ledger-sync"}`, true},
		{"the colon escaped", `{"message":"{\"userName\"\u003a\"ledger-sync\"}"}`, true},
		{"the quote escaped by its code point", `{"message":"{\"userName\":\u0022ledger-sync\"}"}`, true},
		{"'=' escaped in a name", `{"userName":"a+b\u003dc,d_e"}`, true},
		{"the punctuation", `{"userName":"alice.b@EXAMPLE.com"}`, true},
	} {
		b := []byte(c.text)
		if got := p.mayMatch(b); got != c.want {
			t.Errorf("%s: mayMatch(%s) = %v, want %v", c.name, c.text, got, c.want)
		}
		if got := p.mayMatchSlow(b); got != c.want {
			t.Errorf("%s: mayMatchSlow(%s) = %v, want %v", c.name, c.text, got, c.want)
		}
		if referenceWatchSelects(b, watchFilterNames, 0) && !p.mayMatch(b) {
			t.Errorf("%s: the reference selects %s, the prefilter rejects it", c.name, c.text)
		}
	}
}

// FuzzWatchFilter holds the watch's prefilter to the decode-everything
// reference (it never rejects text the reference selects) and its one-pass
// search to the search one key at a time (mayMatchSlow), with the default
// rule's markers (one group of anchors) and every rule's (two).
func FuzzWatchFilter(f *testing.F) {
	for _, s := range []string{
		`{"userIdentity":{"type":"IAMUser","userName":"ledger-sync"}}`, `{"userName":"\u006cedger-sync"}`,
		`{"message":"{\"userName\":\t\"t\"}"}`, `{"message":"{\"m\":\"{\\\"userName\\\":\\n\\\"N\\\"}\"}"}`,
		`{"user\u004eame":"r"}`, `{"userName" : "Alice.B@example.com"}`, `{"userName":"a+b\u003dc,d_e"}`,
		`{"message":"{\"userName\"\u003a\"ledger-sync\"}"}`, `{"a":"H4sI"}`, `{"userName":"AWSCompromisedKeyQuarantine"}`,
		// The spellings the assembly takes whole (pairMaskWatchAVX2), past
		// its first block, with names in other cases.
		`{"eventVersion":"1.08","userIdentity":{"userName":"LEDGER-sync","type":"IAMUser"}}`,
		`{"eventVersion": "1.08", "userIdentity": {"userName": "alice.b@EXAMPLE.com"}}`,
		`{"message":"{\"eventVersion\":\"1.08\",\"userName\":\"Ledger-Sync\",\"x\":1}"}`,
		`{"message":"{\"eventVersion\": \"1.08\", \"userName\": \"n\"}"}`,
		"{\"eventVersion\":\"1.08\",\"userIdentity\":{\"userName\":\"`lice\",\"type\":\"IAMUser\"}}", // '`' folds with '@' in prefix2Key
	} {
		f.Add([]byte(s))
	}
	for _, r := range loadCorpus(f)[:100] {
		f.Add(r.raw)
	}
	list := make([]WatchEntry, len(watchFilterNames))
	for i, n := range watchFilterNames {
		list[i] = watchFor("123456789012", n)
	}
	w := mustWatchlist(f, list...)
	one := newPrefilter([][]byte{[]byte(quarantineMarker)}, w)
	all := newPrefilter([][]byte{[]byte(quarantineMarker), []byte(legacyMarker), []byte("ZeroTrustBoundary-Jx")}, w)
	if len(one.groups) != 1 || len(all.groups) != 2 {
		f.Fatalf("%d and %d groups of anchors, want 1 and 2", len(one.groups), len(all.groups))
	}
	// A marker and a name with few letters, so that the suspect set holds
	// little beyond what the argument puts in it.
	bare := newPrefilter([][]byte{[]byte("ZZ")}, mustWatchlist(f, watchFor("123456789012", "bob")))
	f.Add([]byte(`{"m":"{\"x\":\"{\\\"userName\\\":\\\u0074\\\"bob\\\"}\"}"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []struct {
			p     *prefilter
			names []string
		}{{&one, watchFilterNames}, {&all, watchFilterNames}, {&bare, []string{"bob"}}} {
			got := c.p.mayMatch(b)
			if slow := c.p.mayMatchSlow(b); got != slow {
				t.Fatalf("mayMatch(%q) = %v, the searches one by one say %v", b, got, slow)
			}
			if !got && referenceWatchSelects(b, c.names, 0) {
				t.Fatalf("the reference selects %q, the prefilter (%v) rejects it", b, c.names)
			}
		}
	})
}

// TestMatchWatchlist: MatchWatchlist matches with the list it is given,
// whatever the Matcher's is, on a Scanner and on every value of a Pool's
// batch; nil is no watch.
func TestMatchWatchlist(t *testing.T) {
	v := watchRecord("e", "2024-11-02T13:00:00Z", "s3.amazonaws.com", "ListBuckets", iamUser("123456789012", "alice"), "", "123456789012", "")
	m := mustNew(t, Config{})
	alice, bob := mustWatchlist(t, watchFor("123456789012", "alice")), mustWatchlist(t, watchFor("123456789012", "bob"))
	s := m.NewScanner()
	p := m.NewPool(2)
	values := [][]byte{v, v, v}
	results := make([]Result, len(values))
	for _, c := range []struct {
		name      string
		set, with *Watchlist
		want      int
	}{
		{"matcher's none, alice given", nil, alice, 1},
		{"matcher's alice, bob given", alice, bob, 0},
		{"matcher's alice, none given", alice, nil, 0},
		{"matcher's alice, alice given", alice, alice, 1},
		{"matcher's bob, alice given", bob, alice, 1},
	} {
		m.SetWatchlist(c.set)
		res := s.MatchWatchlist(c.with, v, nil)
		if res.Err != nil || len(res.Findings) != c.want {
			t.Errorf("%s: Scanner: %d findings (%v), want %d", c.name, len(res.Findings), res.Err, c.want)
		}
		if c.want == 1 && res.Findings[0].Watch.UserName != "alice" {
			t.Errorf("%s: the finding names %q's watch", c.name, res.Findings[0].Watch.UserName)
		}
		p.MatchWatchlist(c.with, values, results)
		for i, r := range results {
			if r.Err != nil || len(r.Findings) != c.want {
				t.Errorf("%s: Pool, value %d: %d findings (%v), want %d", c.name, i, len(r.Findings), r.Err, c.want)
			}
		}
	}
}

// TestWatchFilterPositions moves the keys and values the prefilter looks
// for across the blocks of its search (32 positions each, and the last one
// overlapping the one before), with hits before them that do not match, and
// holds the one-pass search to the search key by key at every position.
func TestWatchFilterPositions(t *testing.T) {
	w := mustWatchlist(t, watchFor("123456789012", "ledger-sync"), watchFor("123456789012", "t"))
	p := newPrefilter([][]byte{[]byte(quarantineMarker)}, w)
	for _, tail := range []string{`"userName":"ledger-sync"}`, `"userName":"bob"}`, `"p":"AWSCompromisedKeyQuarantine"}`, `"u":"\u0071"}`, `"u":"\u006c"}`,
		`"userName":"LEdger-sync"}`, `"userName":"le"}`, `"userName":"t"}`, `"userName":"T\\"}`, `"userName":"tx"}`, `"userName": "ledger-sync"}`,
		`"userName":"\tledger-sync"}`, `"userName":"\u006cedger-sync"}`, `"userName":""}`, `"userName":"`} {
		for k := range 100 {
			for _, head := range []string{"", `"userName":"bob",`, `"userName":"alice","userName":"carol",`} {
				b := []byte("{" + strings.Repeat(" ", k) + head + tail)
				for j := range 40 {
					c := append(slices.Clone(b), strings.Repeat(" ", j)...)
					if got, want := p.mayMatch(c), p.mayMatchSlow(c); got != want {
						t.Fatalf("mayMatch(%q) = %v, the search key by key says %v", c, got, want)
					}
				}
			}
		}
	}
}
