package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
)

var samples = filepath.Join("..", "..", "..", "shared", "samples")

func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// alertIDs checks each stdout line is an alert document and returns their
// CloudTrail event ids.
func eventIDs(t *testing.T, stdout string) []string {
	t.Helper()
	var ids []string
	for _, d := range demoDocs(t, stdout) {
		if d.Event.Kind != "alert" || d.Rule.ID != matcher.ElasticQuarantineRule.ID {
			t.Fatalf("not an alert of the rule: %s", d.line)
		}
		ids = append(ids, d.Event.ID)
	}
	return ids
}

// demoDoc is what the tests read of a line the demo or scan prints.
type demoDoc struct {
	Event struct{ Kind, ID string }
	Rule  struct{ ID string }
	// QuarantineWatch: the alert's id; Watch, of a post-quarantine
	// finding, the id of the alert that opened the watch.
	QuarantineWatch struct {
		AlertID string `json:"alert_id"`
		Watch   *struct {
			AlertID string `json:"alert_id"`
		} `json:"watch"`
	} `json:"quarantine_watch"`
	line string
}

func demoDocs(t *testing.T, stdout string) []demoDoc {
	t.Helper()
	var docs []demoDoc
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if line == "" {
			continue
		}
		var d demoDoc
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("stdout line is not JSON: %v\n%s", err, line)
		}
		d.line = line
		docs = append(docs, d)
	}
	return docs
}

func TestScanSamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(samples, "*.json"))
	if err != nil || len(files) != 10 {
		t.Fatalf("samples: %v %v", files, err)
	}
	code, stdout, stderr := runCmd(t, "", append([]string{"scan"}, files...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// Sample 02 is the one quarantine attachment; 09's message is truncated
	// by its source and is reported with its file and position.
	if ids := eventIDs(t, stdout); len(ids) != 1 || ids[0] != "e7bb4b23-66e1-4656-b607-f575fde3b790" {
		t.Errorf("findings %v, want sample 02's event", ids)
	}
	if !strings.Contains(stderr, "09_cloudwatch_logs_subscription_decoded_cloudtrail_powertools_docs.json:1 (byte 0)") ||
		!strings.Contains(stderr, "1 findings, 1 malformed") {
		t.Errorf("stderr does not report the truncated sample 09 and the counts:\n%s", stderr)
	}
}

// TestScanAllRules: with --rules all, the samples give the Elastic finding
// (02) and the legacy inline quarantine (10).
func TestScanAllRules(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(samples, "*.json"))
	code, stdout, stderr := runCmd(t, "", append([]string{"scan", "--rules", "all"}, files...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var doc struct {
			Event struct{ ID string }
			Rule  struct{ ID string }
		}
		if err := json.Unmarshal([]byte(line), &doc); err != nil {
			t.Fatal(err)
		}
		got = append(got, doc.Rule.ID+" "+doc.Event.ID)
	}
	want := []string{
		matcher.ElasticQuarantineRule.ID + " e7bb4b23-66e1-4656-b607-f575fde3b790",
		matcher.LegacyInlineQuarantineRule.ID + " 1c2a53d1-58cc-41b3-85b8-bd7565370e0d",
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("findings %v, want %v", got, want)
	}
	if code, _, stderr := runCmd(t, "", "scan", "--rules", "bogus", files[0]); code == 0 || !strings.Contains(stderr, "bogus") {
		t.Errorf("--rules bogus: exit %d, %s", code, stderr)
	}
}

func TestScanShapesAndFraming(t *testing.T) {
	dir := t.TempDir()
	record, err := os.ReadFile(filepath.Join(samples, "02_attach_user_policy_quarantine_v2_panther.json"))
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	json.Compact(&compact, record)
	line := compact.String()
	v3 := strings.Replace(strings.Replace(line, "QuarantineV2", "QuarantineV3", 1), "e7bb4b23", "00000003", 1)
	v4 := strings.Replace(strings.Replace(line, "QuarantineV2", "QuarantineV4", 1), "e7bb4b23", "00000004", 1)

	// One record per line, with a garbage line between: the garbage is
	// reported with its line, the rest is read.
	ndjson := filepath.Join(dir, "lines.json")
	os.WriteFile(ndjson, []byte(line+"\nnot json at all\n"+v3+"\n"), 0o600)
	// Concatenated documents in a gzip file, as an S3 log object would be.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"Records":[` + v4 + `]}` + line))
	zw.Close()
	gzFile := filepath.Join(dir, "objects.json.gz")
	os.WriteFile(gzFile, gz.Bytes(), 0o600)

	code, stdout, stderr := runCmd(t, v3, "scan", ndjson, gzFile, "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := strings.Join(eventIDs(t, stdout), ",")
	want := "e7bb4b23-66e1-4656-b607-f575fde3b790,00000003-66e1-4656-b607-f575fde3b790,00000004-66e1-4656-b607-f575fde3b790,e7bb4b23-66e1-4656-b607-f575fde3b790,00000003-66e1-4656-b607-f575fde3b790"
	if got != want {
		t.Errorf("findings\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(stderr, "lines.json:2") {
		t.Errorf("garbage line not reported with its line:\n%s", stderr)
	}
}

func TestScanOCSF(t *testing.T) {
	code, stdout, stderr := runCmd(t, "", "scan", "--alert-format", "ocsf", filepath.Join(samples, "02_attach_user_policy_quarantine_v2_panther.json"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var doc struct {
		ClassUID    int `json:"class_uid"`
		FindingInfo struct {
			UID string `json:"uid"`
		} `json:"finding_info"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || doc.ClassUID != 2004 || doc.FindingInfo.UID == "" {
		t.Errorf("not an OCSF Detection Finding (%v): %s", err, stdout)
	}
	if code, _, _ := runCmd(t, "", "scan", "--alert-format", "cef", filepath.Join(samples, "02_attach_user_policy_quarantine_v2_panther.json")); code == 0 {
		t.Error("--alert-format cef accepted")
	}
}

func TestScanUnreadableFile(t *testing.T) {
	code, _, stderr := runCmd(t, "", "scan", filepath.Join(t.TempDir(), "missing.json"))
	if code != 1 || !strings.Contains(stderr, "missing.json") {
		t.Errorf("exit %d, stderr %q: want 1 naming the file", code, stderr)
	}
}

func TestBadSettingsAreNamed(t *testing.T) {
	t.Setenv("QW_MAX_BATCH", "lots")
	code, _, stderr := runCmd(t, "", "run")
	if code != 2 || !strings.Contains(stderr, "QW_MAX_BATCH") {
		t.Errorf("exit %d, stderr %q: want 2 naming QW_MAX_BATCH", code, stderr)
	}
	t.Setenv("QW_MAX_BATCH", "")
	os.Unsetenv("QW_MAX_BATCH")
	code, _, stderr = runCmd(t, "", "run", "--max-batch", "0")
	if code != 1 || !strings.Contains(stderr, "--max-batch") {
		t.Errorf("exit %d, stderr %q: want 1 naming --max-batch", code, stderr)
	}
	for _, bad := range [][]string{{"--watch-for", "-1h"}, {"--context-lookback", "0s"}} {
		code, _, stderr = runCmd(t, "", append([]string{"run"}, bad...)...)
		if code != 1 || !strings.Contains(stderr, bad[0]) {
			t.Errorf("%v: exit %d, stderr %q: want 1 naming %s", bad, code, stderr, bad[0])
		}
	}
	t.Setenv("QW_WATCH_FOR", "three days")
	code, _, stderr = runCmd(t, "", "run")
	if code != 2 || !strings.Contains(stderr, "QW_WATCH_FOR") {
		t.Errorf("exit %d, stderr %q: want 2 naming QW_WATCH_FOR", code, stderr)
	}
	os.Unsetenv("QW_WATCH_FOR")
	code, _, _ = runCmd(t, "", "frobnicate")
	if code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := runCmd(t, "", "version")
	if code != 0 || !strings.HasPrefix(stdout, "quarantine-watch ") {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
}

// TestDemo runs the embedded default as a new user does, for a few seconds:
// every alert printed once, and context documents and post-quarantine
// findings only for alerts it printed.
func TestDemo(t *testing.T) {
	code, stdout, stderr := runCmd(t, "", "demo", "--duration", "4s", "--rate", "3000", "--quarantine-rate", "0.005", "--log-level", "error")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	alerts := map[string]bool{} // alert ids of the Elastic rule's alerts
	seen := map[string]bool{}   // every document's alert id
	var contexts, posts []demoDoc
	for _, d := range demoDocs(t, stdout) {
		switch {
		case d.Event.Kind == "enrichment":
			contexts = append(contexts, d)
			continue
		case d.Event.Kind != "alert":
			t.Fatalf("neither an alert nor a context document: %s", d.line)
		case d.QuarantineWatch.Watch != nil:
			posts = append(posts, d)
		case d.Rule.ID == matcher.ElasticQuarantineRule.ID:
			alerts[d.QuarantineWatch.AlertID] = true
		default:
			t.Fatalf("an alert of a rule the demo does not run: %s", d.line)
		}
		if seen[d.QuarantineWatch.AlertID] {
			t.Errorf("alert %s printed twice", d.QuarantineWatch.AlertID)
		}
		seen[d.QuarantineWatch.AlertID] = true
	}
	if len(alerts) == 0 {
		t.Fatalf("no findings printed; stderr:\n%s", stderr)
	}
	for _, d := range contexts {
		if !alerts[d.QuarantineWatch.AlertID] {
			t.Errorf("a context document for alert %s, which was not printed", d.QuarantineWatch.AlertID)
		}
	}
	for _, d := range posts {
		if !alerts[d.QuarantineWatch.Watch.AlertID] {
			t.Errorf("a post-quarantine finding of the watch opened by alert %s, which was not printed", d.QuarantineWatch.Watch.AlertID)
		}
	}
	if !strings.Contains(stderr, "records produced") || !strings.Contains(stderr, "findings") {
		t.Errorf("no summary on stderr:\n%s", stderr)
	}
}

// TestDemoTellsTheCase: the demo's planted case, as its plan says
// (cloudtrailgen's PlantCase and Aftermath, seed 1): the quarantine's
// alert, then its context document, then a post-quarantine finding for
// each aftermath event the plan makes one, once, and none for the denied
// calls, on stdout; the story in that order on stderr.
func TestDemoTellsTheCase(t *testing.T) {
	code, stdout, stderr := runCmd(t, "", "demo", "--duration", "15s", "--rate", "1000", "--log-level", "error", "--progress", "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	planted := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 1})
	var alertID string
	byEvent := map[string]int{}
	contexts := map[string]int{}
	docs := demoDocs(t, stdout)
	for _, d := range docs {
		if d.Event.ID == planted.QuarantineEventID && d.QuarantineWatch.Watch == nil {
			alertID = d.QuarantineWatch.AlertID
		}
	}
	if alertID == "" {
		t.Fatalf("no alert of the planted quarantine (event %s); stderr:\n%s", planted.QuarantineEventID, stderr)
	}
	for _, d := range docs {
		switch {
		case d.Event.Kind == "enrichment":
			contexts[d.QuarantineWatch.AlertID]++
		case d.QuarantineWatch.Watch != nil && d.QuarantineWatch.Watch.AlertID == alertID:
			byEvent[d.Event.ID]++
		}
	}
	if contexts[alertID] != 1 {
		t.Errorf("%d context documents of the case's alert, want 1", contexts[alertID])
	}
	for _, e := range planted.Aftermath(1) {
		want := 0
		if e.Rule != "" {
			want = 1
		}
		if got := byEvent[e.EventID]; got != want {
			t.Errorf("aftermath %s at %s (plan: %q): %d post-quarantine findings, want %d", e.Name, e.Time.Format(time.RFC3339), e.Rule, got, want)
		}
	}
	story := []string{"demo: case: 1. the alert " + alertID, "demo: case: 2. its context document", "demo: case: 3. post-quarantine finding"}
	at := 0
	for i, line := range story {
		j := strings.Index(stderr[at:], line)
		if j < 0 {
			t.Fatalf("the story on stderr lacks %q after its step %d:\n%s", line, i, stderr)
		}
		at += j
	}
}

// TestConfigPrecedence: flag > environment > config file > default, and a
// key of the file that is no setting is an error naming it.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "qw.yaml")
	os.WriteFile(conf, []byte("rules: all\nvalidate: true\n"), 0o600)
	legacy := filepath.Join(samples, "10_legacy_putuserpolicy_exposed_credential_quarantine_panther.json")
	findings := func(args ...string) int {
		t.Helper()
		code, stdout, stderr := runCmd(t, "", append([]string{"scan"}, args...)...)
		if code != 0 {
			t.Fatalf("scan %v: exit %d: %s", args, code, stderr)
		}
		return strings.Count(stdout, "\n")
	}
	if n := findings("--config", conf, legacy); n != 1 {
		t.Errorf("rules from the file: %d findings, want the legacy one", n)
	}
	t.Setenv("QW_RULES", "elastic")
	if n := findings("--config", conf, legacy); n != 0 {
		t.Errorf("the environment should win over the file: %d findings", n)
	}
	if n := findings("--config", conf, "--rules", "all", legacy); n != 1 {
		t.Errorf("the flag should win over the environment: %d findings", n)
	}
	t.Setenv("QW_CONFIG", conf)
	os.Unsetenv("QW_RULES")
	if n := findings(legacy); n != 1 {
		t.Errorf("QW_CONFIG: %d findings, want 1", n)
	}
	os.WriteFile(conf, []byte("rules: all\nbrokers-typo: x\n"), 0o600)
	if code, _, stderr := runCmd(t, "", "scan", legacy); code != 2 || !strings.Contains(stderr, "brokers-typo") {
		t.Errorf("unknown key: exit %d, stderr %q", code, stderr)
	}
	os.WriteFile(conf, []byte("max-record-bytes: lots\n"), 0o600)
	if code, _, stderr := runCmd(t, "", "scan", legacy); code != 2 || !strings.Contains(stderr, "max-record-bytes") {
		t.Errorf("bad value: exit %d, stderr %q", code, stderr)
	}
}

// TestSecretsNeverLogged starts the service against a broker that is not
// there, with a SASL password from each source, and reads every log line.
func TestSecretsNeverLogged(t *testing.T) {
	const secret = "pa55-never-in-logs"
	conf := filepath.Join(t.TempDir(), "qw.yaml")
	os.WriteFile(conf, []byte("sasl-password: "+secret+"\n"), 0o600)
	for _, c := range []struct {
		name string
		env  string
		args []string
	}{
		{"flag", "", []string{"--sasl-password", secret}},
		{"environment", secret, nil},
		{"config file", "", []string{"--config", conf}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv("QW_SASL_PASSWORD", c.env)
			}
			args := append([]string{"run", "--brokers", "127.0.0.1:1", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "watcher",
				"--metrics-addr", "", "--startup-timeout", "2s", "--log-level", "debug", "--kafka-log-level", "debug", "--log-format", "json"}, c.args...)
			stderr := captureStderr(t, func() {
				code, _, errOut := runCmd(t, "", args...)
				if code != 1 || !strings.Contains(errOut, "127.0.0.1:1") {
					t.Errorf("exit %d, %q: want a start-up error naming the broker", code, errOut)
				}
			})
			if !strings.Contains(stderr, `"sasl_password":"[redacted]"`) {
				t.Errorf("the start-up log does not show the redacted setting:\n%s", stderr)
			}
			if strings.Contains(stderr, secret) {
				t.Errorf("the password was logged:\n%s", stderr)
			}
		})
	}
}

// captureStderr runs f with os.Stderr, where the logger writes, redirected.
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	orig := os.Stderr
	os.Stderr = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	f()
	os.Stderr = orig
	w.Close()
	return <-done
}

// TestTransactionalIDDefault: the default transactional id is the group
// and the host name, so that two services on one host (host networking,
// hostNetwork pods) do not share one; without a host name, start-up asks
// for --transactional-id.
func TestTransactionalIDDefault(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Skipf("this machine has no host name (%v)", err)
	}
	startingTxnID := func(t *testing.T, args ...string) (int, string, string) {
		t.Helper()
		var code int
		var stderr string
		logs := captureStderr(t, func() {
			code, _, stderr = runCmd(t, "", append([]string{"run", "--brokers", "127.0.0.1:1", "--startup-timeout", "1s",
				"--metrics-addr", "", "--log-format", "json"}, args...)...)
		})
		for line := range strings.SplitSeq(logs, "\n") {
			var entry struct {
				Msg string
				ID  string `json:"transactional_id"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "starting" {
				return code, entry.ID, stderr
			}
		}
		return code, "", stderr + logs
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"default group", nil, "quarantine-watch/" + host},
		{"another group", []string{"--group", "soc-prod"}, "soc-prod/" + host},
		{"given", []string{"--group", "soc-prod", "--transactional-id", "ns/pod-0"}, "ns/pod-0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, got, out := startingTxnID(t, c.args...); got != c.want {
				t.Errorf("transactional id %q, want %q; output:\n%s", got, c.want, out)
			}
		})
	}
	t.Run("no host name", func(t *testing.T) {
		orig := hostname
		hostname = func() (string, error) { return "", nil }
		defer func() { hostname = orig }()
		code, got, out := startingTxnID(t)
		if code == 0 || got != "" || !strings.Contains(out, "--transactional-id") {
			t.Errorf("exit %d, transactional id %q: want a refusal naming --transactional-id; output:\n%s", code, got, out)
		}
		if _, got, out := startingTxnID(t, "--transactional-id", "x"); got != "x" {
			t.Errorf("with --transactional-id, no host name needed: got %q; output:\n%s", got, out)
		}
	})
}
