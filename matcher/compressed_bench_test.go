package matcher_test

import (
	"bytes"
	stdgzip "compress/gzip"
	"encoding/base64"
	"io"
	"runtime"
	"testing"
	"time"

	kpgzip "github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// compressedCorpus holds compressed CloudWatch Logs payloads as they travel
// (values) and, for the bound, the gzip bytes inside each one and its base64
// text when it has one. The bound's inputs are cut out here, outside the
// timer, by hand (not by the matcher), so that it times nothing but the
// decoding every reader of these payloads has to do.
type compressedCorpus struct {
	values [][]byte
	b64    [][]byte // base64 text of the gzip bytes, nil for raw gzip
	gz     [][]byte
	bytes  int64
}

func newCompressedCorpus(b *testing.B, s cloudtrailgen.Shape, n int) *compressedCorpus {
	gen := cloudtrailgen.New(shapeConfig(5, s, 0))
	c := &compressedCorpus{}
	for len(c.values) < n {
		r := gen.Next()
		if r.Malformed {
			continue
		}
		v := r.Value
		var text []byte
		switch s {
		case cloudtrailgen.ShapeCloudWatchGzip:
		case cloudtrailgen.ShapeCloudWatchBase64:
			text = v
		case cloudtrailgen.ShapeCloudWatchAWSLogs:
			const prefix, suffix = `{"awslogs":{"data":"`, `"}}`
			if !bytes.HasPrefix(v, []byte(prefix)) || !bytes.HasSuffix(v, []byte(suffix)) {
				b.Fatalf("not an awslogs wrapper: %.40q", v)
			}
			text = v[len(prefix) : len(v)-len(suffix)]
		default:
			b.Fatalf("shape %v is not compressed", s)
		}
		gz := v
		if text != nil {
			var err error
			if gz, err = base64.StdEncoding.DecodeString(string(text)); err != nil {
				b.Fatal(err)
			}
		}
		c.values = append(c.values, v)
		c.b64 = append(c.b64, text)
		c.gz = append(c.gz, gz)
		c.bytes += int64(len(v))
	}
	return c
}

// inflater is one gzip implementation behind the calls a reused reader
// needs: Reset on the next member's bytes, then Read to the end.
type inflater interface {
	io.Reader
	Reset(io.Reader) error
}

// inflateAll inflates every payload into one reused buffer, as a reader that
// keeps its state between payloads would. It returns the bytes inflated, so
// that the work cannot be dropped.
func inflateAll(b *testing.B, zr inflater, in *bytes.Reader, gz [][]byte, buf []byte) int {
	total := 0
	for _, g := range gz {
		in.Reset(g)
		if err := zr.Reset(in); err != nil {
			b.Fatal(err)
		}
		for {
			n, err := zr.Read(buf)
			total += n
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	return total
}

// BenchmarkCompressed times the matcher's non-matching path on compressed
// CloudWatch Logs payloads (raw gzip, base64 of gzip, and the awslogs
// wrapper) beside their bound, the bare decoding of the same payloads: base64
// where the shape has it (encoding/base64 into a reused buffer) and the
// inflate, with klauspost/compress/gzip (the matcher's) and with the
// standard library's compress/gzip, each a reused reader into a reused
// buffer. The four run in alternate passes over the same 512 payloads, so
// that they see the same machine (allocs/op are the standard library's;
// matcher-allocs/payload is the matcher's own), and the ratios are the bound's time over
// the matcher's: the matcher's speed as a fraction of the bound's (target:
// at least 0.8 of klauspost's). The matcher also checks the inflated text's
// UTF-8, framing and prefilter; the bound does none of that.
func BenchmarkCompressed(b *testing.B) {
	for _, s := range []cloudtrailgen.Shape{cloudtrailgen.ShapeCloudWatchGzip, cloudtrailgen.ShapeCloudWatchBase64, cloudtrailgen.ShapeCloudWatchAWSLogs} {
		b.Run(s.String(), func(b *testing.B) {
			c := newCompressedCorpus(b, s, 512)
			m, err := matcher.New(matcher.Config{})
			if err != nil {
				b.Fatal(err)
			}
			sc := m.NewScanner()
			// Every payload is checked once, outside the timer: not a
			// finding, not an error, so that the passes time the
			// non-matching path.
			for _, v := range c.values {
				if res := sc.Match(v, nil); res.Err != nil || len(res.Findings) != 0 {
					b.Fatalf("payload not on the non-matching path: %d findings, error %v", len(res.Findings), res.Err)
				}
			}
			kp, err := kpgzip.NewReader(bytes.NewReader(c.gz[0]))
			if err != nil {
				b.Fatal(err)
			}
			std, err := stdgzip.NewReader(bytes.NewReader(c.gz[0]))
			if err != nil {
				b.Fatal(err)
			}
			var (
				in       bytes.Reader
				inflated = make([]byte, 64<<10)
				decoded  = make([]byte, 64<<10)
				findings []matcher.Finding
				// matcher, base64, klauspost inflate, standard library inflate
				spent   [4]time.Duration
				sink    int
				mallocs uint64
				ms      runtime.MemStats
			)
			passes := [4]func(lo, hi int){
				func(lo, hi int) {
					for _, v := range c.values[lo:hi] {
						res := sc.Match(v, findings)
						findings = res.Findings[:0]
					}
				},
				func(lo, hi int) {
					for _, t := range c.b64[lo:hi] {
						if t == nil {
							continue
						}
						n, err := base64.StdEncoding.Decode(decoded, t)
						if err != nil {
							b.Fatal(err)
						}
						sink += n
					}
				},
				func(lo, hi int) { sink += inflateAll(b, kp, &in, c.gz[lo:hi], inflated) },
				func(lo, hi int) { sink += inflateAll(b, std, &in, c.gz[lo:hi], inflated) },
			}
			// The passes alternate every chunk of payloads, in an order
			// that rotates, so that a change of load on the shared machine
			// falls on all four alike, and none is always the first to
			// bring a chunk into the cache.
			const chunk = 16
			round := 0
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for b.Loop() {
				for lo := 0; lo < len(c.values); lo += chunk {
					hi := min(lo+chunk, len(c.values))
					for k := range passes {
						i := (k + round) % len(passes)
						start := threadCPU(b)
						passes[i](lo, hi)
						spent[i] += threadCPU(b) - start
					}
					round++
				}
			}
			// The matcher's allocations, apart from the standard library's
			// (its Huffman decoder allocates on every Reset), in one more
			// pass outside the timer.
			runtime.ReadMemStats(&ms)
			mallocs = ms.Mallocs
			passes[0](0, len(c.values))
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.Mallocs-mallocs)/float64(len(c.values)), "matcher-allocs/payload")
			if sink == 0 {
				b.Fatal("nothing inflated")
			}
			b.SetBytes(c.bytes)
			n := float64(b.N) * float64(len(c.values))
			perPayload := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / n }
			b.ReportMetric(perPayload(spent[0]), "matcher-cpu-ns/payload")
			b.ReportMetric(perPayload(spent[1]+spent[2]), "klauspost-cpu-ns/payload")
			b.ReportMetric(perPayload(spent[1]+spent[3]), "stdlib-cpu-ns/payload")
			b.ReportMetric(float64(spent[1]+spent[2])/float64(spent[0]), "x-klauspost")
			b.ReportMetric(float64(spent[1]+spent[3])/float64(spent[0]), "x-stdlib")
			b.ReportMetric(float64(spent[2])/float64(spent[0]), "x-klauspost-inflate-only")
		})
	}
}

// threadCPU is the CPU time of the calling thread (the benchmark locks its
// goroutine to it). The passes are timed by it rather than by the clock:
// on a shared machine a pass that is descheduled for another process's
// time slice would be charged for it, and a slice is as long as many
// passes.
func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ts.Nano())
}
