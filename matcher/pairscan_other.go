//go:build !amd64

package matcher

func pairScanAll(b []byte, ps *pairSet) (found int, ok bool) { return -1, false }
