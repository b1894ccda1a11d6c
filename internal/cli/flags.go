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
)

// EnvPrefix is the prefix of every environment variable that sets a flag:
// --max-batch is QW_MAX_BATCH.
const EnvPrefix = "QW_"

// EnvName returns the environment variable for a flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// FlagSet wraps flag.FlagSet so that each flag's default comes from its
// environment variable when set: precedence is flag > env > default. Bad
// environment values are kept and reported by Parse, naming the variable.
type FlagSet struct {
	*flag.FlagSet
	envErrs []error
}

// NewFlagSet returns a FlagSet that reports errors instead of exiting.
func NewFlagSet(name string, output io.Writer) *FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	return &FlagSet{FlagSet: fs}
}

func (f *FlagSet) env(name string) (string, bool) {
	return os.LookupEnv(EnvName(name))
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

// Int defines an int flag with an environment fallback.
func (f *FlagSet) Int(p *int, name string, def int, usage string) {
	if v, ok := f.env(name); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: not an integer", EnvName(name), v))
		} else {
			def = n
		}
	}
	f.IntVar(p, name, def, f.usage(name, usage))
}

// Bool defines a bool flag with an environment fallback.
func (f *FlagSet) Bool(p *bool, name string, def bool, usage string) {
	if v, ok := f.env(name); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: not a boolean", EnvName(name), v))
		} else {
			def = b
		}
	}
	f.BoolVar(p, name, def, f.usage(name, usage))
}

// Duration defines a duration flag with an environment fallback.
func (f *FlagSet) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	if v, ok := f.env(name); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: not a duration", EnvName(name), v))
		} else {
			def = d
		}
	}
	f.DurationVar(p, name, def, f.usage(name, usage))
}

// Float defines a float flag with an environment fallback.
func (f *FlagSet) Float(p *float64, name string, def float64, usage string) {
	if v, ok := f.env(name); ok {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: not a number", EnvName(name), v))
		} else {
			def = x
		}
	}
	f.Float64Var(p, name, def, f.usage(name, usage))
}

// Parse parses args after reporting bad environment values. Like the flag
// package, it prints what was wrong to the flag set's output.
func (f *FlagSet) Parse(args []string) error {
	if len(f.envErrs) > 0 {
		fmt.Fprintln(f.Output(), f.envErrs[0])
		return f.envErrs[0]
	}
	return f.FlagSet.Parse(args)
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
