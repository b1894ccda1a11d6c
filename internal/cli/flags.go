// Package cli holds the command-line plumbing shared by the subcommands:
// flags with environment fallbacks and the logger. It knows nothing of
// Kafka or CloudTrail.
package cli

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
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

// FlagSet wraps flag.FlagSet so that each flag's default comes from its
// environment variable, else from the config file: precedence is flag >
// environment > config file > default. Bad values from the environment or
// the file are kept and reported by Parse, naming where they came from.
type FlagSet struct {
	*flag.FlagSet
	envErrs []error
	file    map[string]string // from --config, by flag name
	fileSrc string
}

// ConfigFlag names the config file: a flag, or QW_CONFIG.
const ConfigFlag = "config"

// NewFlagSet returns a FlagSet that reports errors instead of exiting. It
// reads the config file named by --config in args, or by QW_CONFIG, before
// any flag is defined, so that the file can supply their defaults.
func NewFlagSet(name string, output io.Writer, args []string) *FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	f := &FlagSet{FlagSet: fs}
	path, _ := os.LookupEnv(EnvName(ConfigFlag))
	if p, ok := configArg(args); ok {
		path = p
	}
	var ignored string
	f.StringVar(&ignored, ConfigFlag, path, "YAML file of settings, by flag name (env "+EnvName(ConfigFlag)+"); flags and the environment win over it")
	if path != "" {
		file, err := readConfig(path)
		if err != nil {
			f.envErrs = append(f.envErrs, err)
		}
		f.file, f.fileSrc = file, path
	}
	return f
}

// configArg finds --config's value in args without parsing the rest.
func configArg(args []string) (string, bool) {
	for i, a := range args {
		if a == "--" {
			break
		}
		name := strings.TrimLeft(a, "-")
		if name == a {
			continue
		}
		if v, ok := strings.CutPrefix(name, ConfigFlag+"="); ok {
			return v, true
		}
		if name == ConfigFlag && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// lookup returns a flag's value from the environment, else the config
// file, and where it came from.
func (f *FlagSet) lookup(name string) (value, source string, ok bool) {
	if v, ok := os.LookupEnv(EnvName(name)); ok {
		return v, EnvName(name), true
	}
	if v, ok := f.file[name]; ok {
		return v, fmt.Sprintf("%s: %s", f.fileSrc, name), true
	}
	return "", "", false
}

func (f *FlagSet) env(name string) (string, bool) {
	v, _, ok := f.lookup(name)
	return v, ok
}

func (f *FlagSet) badValue(name, v, want string) {
	_, src, _ := f.lookup(name)
	f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: %s", src, v, want))
}

func (f *FlagSet) usage(name, usage string) string {
	return fmt.Sprintf("%s (env %s)", usage, EnvName(name))
}

// String defines a string flag with an environment fallback.
func (f *FlagSet) String(p *string, name, def, usage string) {
	if v, ok := f.env(name); ok {
		def = v
	}
	f.StringVar(p, name, def, f.usage(name, usage))
}

// List defines a comma-separated list flag with an environment fallback.
func (f *FlagSet) List(p *[]string, name string, def []string, usage string) {
	if v, ok := f.env(name); ok {
		def = SplitList(v)
	}
	*p = def
	f.Func(name, f.usage(name, usage)+fmt.Sprintf(" (default %q)", strings.Join(def, ",")), func(s string) error {
		*p = SplitList(s)
		return nil
	})
}

// fallback returns the flag's value from the environment or the config
// file, parsed, else def; a value that does not parse is kept for Parse to
// report, naming where it came from.
func fallback[T any](f *FlagSet, name string, def T, parse func(string) (T, error), want string) T {
	v, ok := f.env(name)
	if !ok {
		return def
	}
	x, err := parse(v)
	if err != nil {
		f.badValue(name, v, want)
		return def
	}
	return x
}

// Int defines an int flag with an environment fallback.
func (f *FlagSet) Int(p *int, name string, def int, usage string) {
	f.IntVar(p, name, fallback(f, name, def, strconv.Atoi, "not an integer"), f.usage(name, usage))
}

// Bool defines a bool flag with an environment fallback.
func (f *FlagSet) Bool(p *bool, name string, def bool, usage string) {
	f.BoolVar(p, name, fallback(f, name, def, strconv.ParseBool, "not a boolean"), f.usage(name, usage))
}

// Duration defines a duration flag with an environment fallback.
func (f *FlagSet) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	f.DurationVar(p, name, fallback(f, name, def, time.ParseDuration, "not a duration"), f.usage(name, usage))
}

// Float defines a float flag with an environment fallback.
func (f *FlagSet) Float(p *float64, name string, def float64, usage string) {
	parse := func(v string) (float64, error) { return strconv.ParseFloat(v, 64) }
	f.Float64Var(p, name, fallback(f, name, def, parse, "not a number"), f.usage(name, usage))
}

// Parse parses args after reporting bad values from the environment or the
// config file, and keys of the file that name no flag. Like the flag
// package, it prints what was wrong to the flag set's output.
func (f *FlagSet) Parse(args []string) error {
	for key := range f.file {
		if f.Lookup(key) == nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s: %q is not a setting of %s", f.fileSrc, key, f.Name()))
		}
	}
	if len(f.envErrs) > 0 {
		fmt.Fprintln(f.Output(), f.envErrs[0])
		return f.envErrs[0]
	}
	return f.FlagSet.Parse(args)
}

// readConfig reads a YAML mapping of flag names to scalars or lists.
func readConfig(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
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
