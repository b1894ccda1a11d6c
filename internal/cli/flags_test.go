package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type settings struct {
	brokers  []string
	batch    int
	validate bool
	wait     time.Duration
	password string
	name     string
}

func newTestFlags(out *bytes.Buffer) (*FlagSet, *settings) {
	fs := NewFlagSet("run", out)
	var s settings
	fs.List(&s.brokers, "brokers", []string{"localhost:9092"}, "brokers")
	fs.Int(&s.batch, "max-batch", 100, "batch")
	fs.Bool(&s.validate, "validate", false, "validate")
	fs.Duration(&s.wait, "wait", time.Second, "wait")
	fs.Secret(&s.password, "sasl-password", "password")
	fs.String(&s.name, "name", "default-name", "name")
	return fs, &s
}

// TestPrecedence: flag > environment > config file > default, for every
// kind of flag, the config file named by --config or QW_CONFIG.
func TestPrecedence(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(conf, []byte("brokers: [a:1, b:2]\nmax-batch: 7\nvalidate: true\nwait: 3s\nsasl-password: from-file\nname: file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
		want settings
	}{
		{"defaults", nil, nil, settings{[]string{"localhost:9092"}, 100, false, time.Second, "", "default-name"}},
		{"file", nil, []string{"--config", conf}, settings{[]string{"a:1", "b:2"}, 7, true, 3 * time.Second, "from-file", "file"}},
		{"file from QW_CONFIG", map[string]string{"QW_CONFIG": conf}, nil, settings{[]string{"a:1", "b:2"}, 7, true, 3 * time.Second, "from-file", "file"}},
		{"environment over file", map[string]string{"QW_MAX_BATCH": "9", "QW_SASL_PASSWORD": "from-env", "QW_BROKERS": "c:3"}, []string{"--config", conf},
			settings{[]string{"c:3"}, 9, true, 3 * time.Second, "from-env", "file"}},
		{"flags over environment", map[string]string{"QW_MAX_BATCH": "9", "QW_VALIDATE": "false", "QW_NAME": "env"},
			[]string{"--config", conf, "--max-batch", "11", "--validate", "--sasl-password", "from-flag", "--brokers", "d:4"},
			settings{[]string{"d:4"}, 11, true, 3 * time.Second, "from-flag", "env"}},
		{"a bad environment value under a flag is not looked at", map[string]string{"QW_MAX_BATCH": "lots"}, []string{"--max-batch", "5"},
			settings{[]string{"localhost:9092"}, 5, false, time.Second, "", "default-name"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var out bytes.Buffer
			fs, got := newTestFlags(&out)
			if err := fs.Parse(c.args); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			if strings.Join(got.brokers, ",") != strings.Join(c.want.brokers, ",") || got.batch != c.want.batch || got.validate != c.want.validate ||
				got.wait != c.want.wait || got.password != c.want.password || got.name != c.want.name {
				t.Errorf("got %+v, want %+v", *got, c.want)
			}
		})
	}
}

// TestErrorsNameTheSource: a bad value names its variable or file and key;
// a secret's value is never shown.
func TestErrorsNameTheSource(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("wait: soon\nnot-a-flag: 1\n"), 0o600)
	syntax := filepath.Join(dir, "syntax.yaml")
	os.WriteFile(syntax, []byte("sasl-password: hunter2\nbrokers: [a\n"), 0o600)
	for _, c := range []struct {
		name    string
		env     map[string]string
		args    []string
		want    []string
		notWant string
	}{
		{"environment", map[string]string{"QW_MAX_BATCH": "lots"}, nil, []string{`QW_MAX_BATCH="lots": not an integer`}, ""},
		{"file", nil, []string{"--config", bad}, []string{bad + `: wait="soon": not a duration`, bad + `: "not-a-flag" is not a setting of run`}, ""},
		{"syntax", nil, []string{"--config", syntax}, []string{"--config " + syntax + ": line "}, "hunter2"},
		{"missing file", nil, []string{"--config", filepath.Join(dir, "missing.yaml")}, []string{"missing.yaml"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var out bytes.Buffer
			fs, _ := newTestFlags(&out)
			err := fs.Parse(c.args)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) || !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, output %q: want %q in both", err, out.String(), w)
				}
			}
			if c.notWant != "" && strings.Contains(out.String()+err.Error(), c.notWant) {
				t.Errorf("%q shown: %s", c.notWant, out.String())
			}
		})
	}
}

// TestHelpShowsCodeDefaults: PrintDefaults shows the defaults of the code,
// not what the environment set, and nothing of a secret.
func TestHelpShowsCodeDefaults(t *testing.T) {
	t.Setenv("QW_NAME", "from-env")
	t.Setenv("QW_SASL_PASSWORD", "hunter2")
	var out bytes.Buffer
	fs, _ := newTestFlags(&out)
	if err := fs.Parse([]string{"-h"}); err == nil {
		t.Fatal("-h: no error")
	}
	help := out.String()
	for _, w := range []string{`(default "default-name")`, "(default localhost:9092)", "(env QW_SASL_PASSWORD)"} {
		if !strings.Contains(help, w) {
			t.Errorf("help lacks %q:\n%s", w, help)
		}
	}
	for _, nw := range []string{"from-env", "hunter2"} {
		if strings.Contains(help, nw) {
			t.Errorf("help shows %q:\n%s", nw, help)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"--sasl-password s3cret --max-batch 5", "--sasl-password [redacted] --max-batch 5"},
		{"-sasl-password=s3cret", "-sasl-password=[redacted]"},
		{"--name --sasl-password --sasl-password s3cret", "--name --sasl-password --sasl-password [redacted]"},
		{"--validate --sasl-password s3cret", "--validate --sasl-password [redacted]"},
		{"--validate=true x --sasl-password s3cret", "--validate=true x --sasl-password s3cret"}, // not flags after x
		{"--sasl-password", "--sasl-password"},
	} {
		var out bytes.Buffer
		fs, _ := newTestFlags(&out)
		if got := strings.Join(fs.Redact(strings.Fields(c.in)), " "); got != c.want {
			t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestSetAndOnCommandLine(t *testing.T) {
	t.Setenv("QW_NAME", "env")
	var out bytes.Buffer
	fs, _ := newTestFlags(&out)
	if err := fs.Parse([]string{"--max-batch", "3"}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][2]bool{"max-batch": {true, true}, "name": {true, false}, "wait": {false, false}} {
		if set, cl := fs.IsSet(name), fs.OnCommandLine(name); set != want[0] || cl != want[1] {
			t.Errorf("%s: IsSet %v, OnCommandLine %v; want %v", name, set, cl, want)
		}
	}
}
