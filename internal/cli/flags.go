// Package cli holds the command-line plumbing shared by the subcommands:
// flags with environment and config-file fallbacks, and the logger. It
// knows nothing of Kafka or CloudTrail.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
)

// EnvPrefix is the prefix of every environment variable that sets a flag:
// --max-batch is QW_MAX_BATCH.
const EnvPrefix = "QW_"

// EnvName returns the environment variable for a flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ConfigFlag names the config file: a flag, or QW_CONFIG.
const ConfigFlag = "config"

// FlagSet wraps flag.FlagSet with environment and config-file fallbacks:
// precedence is flag > environment > config file > default. The fallbacks
// are applied by Parse, after the command line, to the flags it did not
// set, so a flag's default is always the one in the code: help and usage
// messages never show a value from the environment or the file, and
// secrets (see Secret) never show at all.
type FlagSet struct {
	*flag.FlagSet
	want    map[string]string // what a flag's value must be, for errors
	secrets map[string]bool
	config  string
	// onCommandLine holds the flags that Parse found on the command line.
	onCommandLine map[string]bool
}

// NewFlagSet returns a FlagSet that reports errors instead of exiting.
func NewFlagSet(name string, output io.Writer) *FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	f := &FlagSet{FlagSet: fs, want: map[string]string{}, secrets: map[string]bool{}}
	fs.StringVar(&f.config, ConfigFlag, "", "YAML file of settings, by flag name (env "+EnvName(ConfigFlag)+"); flags and the environment win over it")
	return f
}

func (f *FlagSet) usage(name, usage string) string {
	return fmt.Sprintf("%s (env %s)", usage, EnvName(name))
}

// String defines a string flag with fallbacks.
func (f *FlagSet) String(p *string, name, def, usage string) {
	f.StringVar(p, name, def, f.usage(name, usage))
}

// Secret defines a string flag whose value is never printed: its default
// is empty and its flag.Value shows nothing, so neither PrintDefaults nor
// an error message can show what the environment, the file or the command
// line set.
func (f *FlagSet) Secret(p *string, name, usage string) {
	f.secrets[name] = true
	f.Var(&secretValue{p}, name, f.usage(name, usage))
}

// secretValue is a string flag.Value whose String is always empty.
type secretValue struct{ p *string }

func (v *secretValue) String() string { return "" }

func (v *secretValue) Set(s string) error {
	*v.p = s
	return nil
}

// List defines a comma-separated list flag with fallbacks.
func (f *FlagSet) List(p *[]string, name string, def []string, usage string) {
	*p = def
	f.Var(&listValue{p}, name, f.usage(name, usage))
}

// listValue is a comma-separated list flag.Value.
type listValue struct{ p *[]string }

func (v *listValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

func (v *listValue) Set(s string) error {
	*v.p = SplitList(s)
	return nil
}

// Int defines an int flag with fallbacks.
func (f *FlagSet) Int(p *int, name string, def int, usage string) {
	f.want[name] = "not an integer"
	f.IntVar(p, name, def, f.usage(name, usage))
}

// Bool defines a bool flag with fallbacks.
func (f *FlagSet) Bool(p *bool, name string, def bool, usage string) {
	f.want[name] = "not a boolean"
	f.BoolVar(p, name, def, f.usage(name, usage))
}

// Duration defines a duration flag with fallbacks.
func (f *FlagSet) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	f.want[name] = "not a duration"
	f.DurationVar(p, name, def, f.usage(name, usage))
}

// Float defines a float flag with fallbacks.
func (f *FlagSet) Float(p *float64, name string, def float64, usage string) {
	f.want[name] = "not a number"
	f.Float64Var(p, name, def, f.usage(name, usage))
}

// Redact returns a copy of the command-line arguments args with the value
// of every secret flag replaced by "[redacted]", for pages that show the
// command line (pprof's cmdline).
func (f *FlagSet) Redact(args []string) []string {
	out := append([]string(nil), args...)
	for i := 0; i < len(out); i++ {
		a := out[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			break // the flag package stops here too
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		fl := f.Lookup(name)
		if fl == nil {
			continue
		}
		if f.secrets[name] {
			if hasValue {
				out[i] = a[:len(a)-len(value)] + "[redacted]"
			} else if i+1 < len(out) {
				out[i+1] = "[redacted]"
			}
		}
		if b, ok := fl.Value.(interface{ IsBoolFlag() bool }); !hasValue && !(ok && b.IsBoolFlag()) {
			i++ // the flag's value
		}
	}
	return out
}

// OnCommandLine reports whether Parse found the flag on the command line.
func (f *FlagSet) OnCommandLine(name string) bool { return f.onCommandLine[name] }

// IsSet reports whether the flag was set on the command line, in the
// environment or in the config file.
func (f *FlagSet) IsSet(name string) bool {
	set := false
	f.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// Parse parses args, then sets each flag that args did not set from its
// environment variable, else from the config file (--config, else
// QW_CONFIG). A value that does not parse, a config file that cannot be
// read and a key of the file that names no flag are errors naming where
// they came from, never with a secret's value. Like the flag package, it
// prints what was wrong to the flag set's output.
func (f *FlagSet) Parse(args []string) error {
	if err := f.FlagSet.Parse(args); err != nil {
		return err
	}
	onCommandLine := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { onCommandLine[fl.Name] = true })
	f.onCommandLine = onCommandLine
	if !onCommandLine[ConfigFlag] {
		f.config = os.Getenv(EnvName(ConfigFlag))
	}
	var errs []error
	var file map[string]string
	if f.config != "" {
		var err error
		if file, err = readConfig(f.config); err != nil {
			errs = append(errs, err)
		}
	}
	keys := make([]string, 0, len(file))
	for key := range file {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if fl := f.Lookup(key); fl == nil || key == ConfigFlag {
			errs = append(errs, fmt.Errorf("%s: %q is not a setting of %s", f.config, key, f.Name()))
		}
	}
	f.VisitAll(func(fl *flag.Flag) {
		if onCommandLine[fl.Name] || fl.Name == ConfigFlag {
			return
		}
		v, ok := os.LookupEnv(EnvName(fl.Name))
		src := EnvName(fl.Name)
		if !ok {
			if v, ok = file[fl.Name]; !ok {
				return
			}
			src = fmt.Sprintf("%s: %s", f.config, fl.Name)
		}
		if err := f.Set(fl.Name, v); err != nil {
			shown := strconv.Quote(v)
			if f.secrets[fl.Name] {
				shown = "[redacted]"
			}
			want := f.want[fl.Name]
			if want == "" {
				want = "invalid value"
			}
			errs = append(errs, fmt.Errorf("%s=%s: %s", src, shown, want))
		}
	})
	if len(errs) > 0 {
		for _, err := range errs {
			fmt.Fprintln(f.Output(), err)
		}
		return errors.Join(errs...)
	}
	return nil
}

// readConfig reads a YAML mapping of flag names to scalars or lists.
func readConfig(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("--config %s: %s", path, yamlError(err))
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch v := v.(type) {
		case []any:
			items := make([]string, len(v))
			for i, item := range v {
				items[i] = fmt.Sprint(item)
			}
			out[k] = strings.Join(items, ",")
		case map[string]any:
			return nil, fmt.Errorf("--config %s: %s: want a value or a list, not a mapping", path, k)
		case nil:
			out[k] = ""
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out, nil
}

// yamlError describes a YAML error by its position and message, without
// the lines of the file that the YAML library quotes: they may hold a
// secret.
func yamlError(err error) string {
	var yerr yaml.Error
	if errors.As(err, &yerr) {
		if tok := yerr.GetToken(); tok != nil && tok.Position != nil {
			return fmt.Sprintf("line %d, column %d: %s", tok.Position.Line, tok.Position.Column, yerr.GetMessage())
		}
		return yerr.GetMessage()
	}
	return "not a YAML mapping of settings"
}

// SplitList splits a comma-separated list, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// IsTerminal reports whether f is a character device, as a terminal is.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// NewLogger returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("json", "text", or "auto": JSON unless w is a terminal).
func NewLogger(w *os.File, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "auto", "":
		if IsTerminal(w) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want auto, json or text", format)
}
