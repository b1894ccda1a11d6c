//go:build !amd64

package matcher

func pairScanAll(b []byte, ps *pairSet) (found int, ok bool) { return -1, false }

func pairBlocks([]byte) bool { return false }

func nextPairBlock(b []byte, off, end int, ps *pairSet) (int, uint32) { return -1, 0 }

func nextPairBlockWatch(b []byte, off, end int, ps *pairSet, prefix2 *[1024]uint64) (int, uint32) {
	return -1, 0
}
