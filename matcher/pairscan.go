package matcher

// pairSet is up to four byte pairs searched in one pass. Each prefilter
// search is anchored on a pair that is rare in CloudTrail text: `\u` of an
// escape, "H4" of base64 gzip, and one per marker ("Qu" of the quarantine
// policies, "_D" of the legacy policy name). Unused slots repeat a used
// pair; more pairs take more sets (prefilter.groups).
type pairSet struct {
	first, second [4]byte
}

// indexPair returns the lowest i such that (b[i], b[i+1]) is in ps, or -1.
// On amd64 with AVX2 it compares 32 positions per step against all four
// pairs at once, so the prefilter reads each record once instead of once per
// search (BenchmarkPrefilter).
func indexPair(b []byte, ps *pairSet) int {
	if found, ok := pairScanAll(b, ps); ok {
		return found
	}
	for i := 0; i+1 < len(b); i++ {
		c, d := b[i], b[i+1]
		for k := range ps.first {
			if c == ps.first[k] && d == ps.second[k] {
				return i
			}
		}
	}
	return -1
}
