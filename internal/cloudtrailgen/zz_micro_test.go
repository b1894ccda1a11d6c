package cloudtrailgen

import (
	"testing"

	kgz "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/flate"
)

func BenchmarkMicroEscape(b *testing.B) {
	g := New(Config{Seed: 1})
	st := g.plan(Noise, 1500)
	raw := g.appendCloudTrail(nil, st)
	var dst []byte
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		dst = appendJSONString(dst[:0], raw)
	}
}

func BenchmarkMicroGzip(b *testing.B) {
	g := New(Config{Seed: 1})
	p := g.appendCloudWatch(nil)
	for len(p) < 3500 {
		p = g.appendCloudWatch(nil)
	}
	b.SetBytes(int64(len(p)))
	for _, lvl := range []int{1, 2, kgz.HuffmanOnly} {
		b.Run(string(rune('0'+lvl+3)), func(b *testing.B) {
			var out appendWriter
			w, _ := kgz.NewWriterLevel(&out, lvl)
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				out.b = out.b[:0]
				w.Reset(&out)
				w.Write(p)
				w.Close()
			}
		})
	}
	b.Run("flate-stateless", func(b *testing.B) {
		var out appendWriter
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			out.b = out.b[:0]
			flate.StatelessDeflate(&out, p, true, nil)
		}
	})
}
