package matcher_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// adversarial is a value built to cost as much as one value can at the
// defaults: what the limits of §4 of issue 10 are for.
type adversarial struct {
	name string
	// write writes the value's JSON text; it is gzipped when the text
	// is over the value limit.
	write func(w io.Writer)
	// err is the error the value must get, or nil; findings is how many.
	err      error
	findings int
}

const marker = `"AWSCompromisedKeyQuarantine"`

// repeat writes s n times, through a buffer.
func repeat(w io.Writer, s string, n int) {
	bw := bufio.NewWriterSize(w, 64<<10)
	for range n {
		bw.WriteString(s)
	}
	bw.Flush()
}

func adversarialValues() []adversarial {
	nested := func(levels int) func(w io.Writer) {
		return func(w io.Writer) {
			io.WriteString(w, `{"eventName":"AttachUserPolicy","eventID":"deep","requestParameters":`)
			repeat(w, `{"a":`, levels-2)
			io.WriteString(w, marker)
			repeat(w, `}`, levels-2)
			io.WriteString(w, `}`)
		}
	}
	return []adversarial{
		// "A record nested some thousands of levels deep takes seconds."
		{name: "nested-9000", write: nested(9000), err: matcher.ErrTooComplex},
		{name: "nested-512", write: nested(matcher.DefaultMaxDepth), findings: 1},
		// "A compressed value of tens of KB that inflates, within the
		// decompression limit, to millions of tiny array elements."
		{name: "elements-16M-gzip", write: func(w io.Writer) {
			io.WriteString(w, `{"Records":[`+marker)
			repeat(w, `,0`, (matcher.DefaultMaxDecodedBytes-64)/2)
			io.WriteString(w, `]}`)
		}, err: matcher.ErrTooComplex},
		{name: "elements-1M-gzip", write: func(w io.Writer) {
			io.WriteString(w, `{"Records":[`+marker)
			repeat(w, `,0`, matcher.DefaultMaxElements-1)
			io.WriteString(w, `]}`)
		}, err: matcher.ErrUnknownShape},
		// A million members to resolve duplicate keys among, the marker in
		// the first, overwritten by the last.
		{name: "params-1M-duplicate-keys-gzip", write: func(w io.Writer) {
			io.WriteString(w, `{"eventName":"AttachUserPolicy","eventID":"dup","requestParameters":{`+marker+`:1`)
			repeat(w, `,"AWSCompromisedKeyQuarantine":1`, matcher.DefaultMaxMembers-8)
			io.WriteString(w, `,"AWSCompromisedKeyQuarantine":null}}`)
		}},
		// As many distinct keys as fit in a value (20 bits each at least,
		// compressed), to sort.
		{name: "params-300k-keys-gzip", write: func(w io.Writer) {
			bw := bufio.NewWriter(w)
			io.WriteString(bw, `{"eventName":"AttachUserPolicy","eventID":"wide","requestParameters":{"policyArn":`+marker)
			for i := range 300_000 {
				fmt.Fprintf(bw, `,"k%d":1`, i)
			}
			io.WriteString(bw, `}}`)
			bw.Flush()
		}, findings: 1},
		// A record of a million members: each field a rule reads is
		// looked up among them.
		{name: "record-1M-members-gzip", write: func(w io.Writer) {
			io.WriteString(w, `{"eventName":"AttachUserPolicy","eventID":"top"`)
			repeat(w, `,"k":0`, matcher.DefaultMaxMembers-8)
			io.WriteString(w, `,"requestParameters":{"policyArn":`+marker+`}}`)
		}, findings: 1},
		// 32 MB of escapes in one string to decode.
		{name: "escapes-32MB-gzip", write: func(w io.Writer) {
			io.WriteString(w, `{"eventName":"AttachUserPolicy","eventID":"esc","requestParameters":{"p":"AWSCompromisedKey`)
			repeat(w, `\u0051`, (matcher.DefaultMaxDecodedBytes-256)/6)
			io.WriteString(w, `"}}`)
		}},
		// An ECS document of a million dotted fields.
		{name: "ecs-1M-dotted-gzip", write: func(w io.Writer) {
			io.WriteString(w, `{"event.action":"AttachUserPolicy","event.outcome":"success","event.dataset":"aws.cloudtrail","aws.cloudtrail.request_parameters":`+marker)
			repeat(w, `,"event.x":{"action":0}`, matcher.DefaultMaxMembers/2-8)
			io.WriteString(w, `}`)
		}, findings: 1},
		// An ECS document whose event is an array of a million objects,
		// each a place to look for every field a finding reports.
		{name: "ecs-1M-event-objects-gzip", write: func(w io.Writer) {
			io.WriteString(w, `{"event.action":"AttachUserPolicy","event.outcome":"success","event.dataset":"aws.cloudtrail","aws.cloudtrail.request_parameters":`+marker+`,"event":[{"x":0}`)
			repeat(w, `,{"x":0}`, matcher.DefaultMaxMembers-8)
			io.WriteString(w, `]}`)
		}, findings: 1},
	}
}

// build makes the value: the text, gzipped when over the value limit.
func (a adversarial) build() []byte {
	var text bytes.Buffer
	a.write(&text)
	if text.Len() <= matcher.DefaultMaxValueBytes {
		return text.Bytes()
	}
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	zw.Write(text.Bytes())
	zw.Close()
	return z.Bytes()
}

func (a adversarial) check(res matcher.Result) error {
	if len(res.Findings) != a.findings || (a.err == nil) != (res.Err == nil) || a.err != nil && !errors.Is(res.Err, a.err) {
		return fmt.Errorf("%s: %d findings, error %v; want %d, %v", a.name, len(res.Findings), res.Err, a.findings, a.err)
	}
	return nil
}

// TestAdversarialValues: each adversarial value gets the outcome it must,
// at the defaults.
func TestAdversarialValues(t *testing.T) {
	if testing.Short() || raceDetector {
		t.Skip("builds values of 32 MB; make test runs it without -race")
	}
	m, err := matcher.New(matcher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewScanner()
	for _, a := range adversarialValues() {
		if err := a.check(s.Match(a.build(), nil)); err != nil {
			t.Error(err)
		}
	}
}

// BenchmarkAdversarial times each adversarial value at the defaults and
// measures its peak memory over the process's baseline, in a child process
// of its own (peak RSS, VmHWM, reset after the value is built and the
// heap collected). The bounds are 2 s and 64 MB per value; the ratios to
// them are reported beside the figures.
//
//	go test ./matcher/ -run '^$' -bench Adversarial -benchtime 3x
func BenchmarkAdversarial(b *testing.B) {
	m, err := matcher.New(matcher.Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, a := range adversarialValues() {
		b.Run(a.name, func(b *testing.B) {
			value := a.build()
			s := m.NewScanner()
			if err := a.check(s.Match(value, nil)); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				s.Match(value, nil)
			}
			sec := b.Elapsed().Seconds() / float64(b.N)
			peak := childPeak(b, a.name)
			b.ReportMetric(float64(len(value)), "value-bytes")
			b.ReportMetric(sec*1e3, "ms/value")
			b.ReportMetric(float64(peak)/(1<<20), "peak-MB/value")
			b.ReportMetric(sec/2, "time/2s")
			b.ReportMetric(float64(peak)/(64<<20), "peak/64MB")
		})
	}
}

// childPeak runs TestAdversarialChild for one value in a new process and
// returns the peak memory it reported.
func childPeak(b *testing.B, name string) int64 {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestAdversarialChild$", "-test.v")
	cmd.Env = append(os.Environ(), "QW_ADVERSARIAL="+name)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("child for %s: %v\n%s", name, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "peak-over-baseline-bytes" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("child for %s said nothing:\n%s", name, out)
	return 0
}

// TestAdversarialChild is BenchmarkAdversarial's child: it evaluates one
// value (QW_ADVERSARIAL names it) and prints its peak RSS over the RSS
// before, with the value built and a Scanner warmed on a small record.
func TestAdversarialChild(t *testing.T) {
	name := os.Getenv("QW_ADVERSARIAL")
	if name == "" {
		t.Skip("run by BenchmarkAdversarial")
	}
	var a adversarial
	for _, v := range adversarialValues() {
		if v.name == name {
			a = v
		}
	}
	value := a.build()
	m, err := matcher.New(matcher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewScanner()
	s.Match([]byte(`{"eventName":"AttachUserPolicy","requestParameters":{"policyArn":`+marker+`}}`), nil)
	runtime.GC()
	debug.FreeOSMemory()
	base := procStatus(t, "VmRSS")
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Fatalf("resetting the peak RSS: %v", err)
	}
	start := time.Now()
	res := s.Match(value, nil)
	elapsed := time.Since(start)
	peak := procStatus(t, "VmHWM")
	if err := a.check(res); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("peak-over-baseline-bytes %d elapsed %v baseline-rss %d\n", peak-base, elapsed, base)
}

// procStatus reads a size in kB from /proc/self/status, in bytes.
func procStatus(t *testing.T, key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == key+":" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", key)
	return 0
}
