package matcher

import "golang.org/x/sys/cpu"

// useAVX2 selects pairScanAVX2; without AVX2 the portable loop runs.
var useAVX2 = cpu.X86.HasAVX2

//go:noescape
func pairScanAVX2(p *byte, n int, first, second *[4]byte) int

// pairScanAll scans all of b with AVX2 when it can: whole 32-position
// blocks, then one last block that overlaps the previous one so that no
// position is left to a byte loop. ok is false when it cannot (no AVX2, or
// b too short for one block).
func pairScanAll(b []byte, ps *pairSet) (found int, ok bool) {
	if !useAVX2 || len(b) < 33 {
		return -1, false
	}
	n := (len(b) - 1) &^ 31 // the last block reads b[n], which exists
	if i := pairScanAVX2(&b[0], n, &ps.first, &ps.second); i >= 0 {
		return i, true
	}
	if n == len(b)-1 {
		return -1, true
	}
	// Positions len-33 .. len-2; those before n held no pair.
	last := len(b) - 33
	if i := pairScanAVX2(&b[last], 32, &ps.first, &ps.second); i >= 0 {
		return last + i, true
	}
	return -1, true
}
