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

//go:noescape
func pairMaskAVX2(p *byte, n int, first, second *[4]byte) (at, mask int)

// pairBlocks reports whether nextPairBlock can search b: AVX2, and at least
// one whole block.
func pairBlocks(b []byte) bool { return useAVX2 && len(b) >= 33 }

// nextPairBlock returns the first block of 32 positions at or after off and
// below end (end-off a multiple of 32, end < len(b)) holding a pair of ps,
// with its mask (bit k: a pair at the block's start + k); -1 when none.
func nextPairBlock(b []byte, off, end int, ps *pairSet) (int, uint32) {
	at, mask := pairMaskAVX2(&b[off], end-off, &ps.first, &ps.second)
	if at < 0 {
		return -1, 0
	}
	return off + at, uint32(mask)
}

//go:noescape
func pairMaskWatchAVX2(p *byte, n, avail int, first, second *[4]byte, prefix2 *[1024]uint64) (at, mask int)

// nextPairBlockWatch is nextPairBlock for a group whose fourth pair is the
// watch's, which skips the blocks where that pair alone occurs and is, at
// each occurrence, `"userName":"` followed by a value no name can start
// (pairMaskWatchAVX2, held to watchValueAt by the prefilter's fuzzing).
func nextPairBlockWatch(b []byte, off, end int, ps *pairSet, prefix2 *[1024]uint64) (int, uint32) {
	at, mask := pairMaskWatchAVX2(&b[off], end-off, len(b)-off, &ps.first, &ps.second, prefix2)
	if at < 0 {
		return -1, 0
	}
	return off + at, uint32(mask)
}
