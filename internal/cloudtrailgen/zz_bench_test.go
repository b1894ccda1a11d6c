package cloudtrailgen

import "testing"

func BenchmarkScratch(b *testing.B) {
	for s := ShapeRecord; s < numShapes; s++ {
		b.Run(s.String(), func(b *testing.B) {
			g := New(Config{Seed: 1, Shapes: map[Shape]float64{s: 1}})
			buf := make([]byte, 0, 64<<10)
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				r := g.AppendNext(buf[:0])
				buf = r.Value
				n += len(buf)
			}
			b.SetBytes(int64(n / b.N))
		})
	}
}
