package matcher

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// TestLargeBuffersAreGivenBack: after a value that needed more than
// keepBytes of buffer, including a gzip whose trailer promises 32 MB it does
// not hold, a Scanner keeps none of it.
func TestLargeBuffersAreGivenBack(t *testing.T) {
	big := gz(append(append([]byte(`{"eventName":"AttachUserPolicy","requestParameters":{"a":"`), bytes.Repeat([]byte("AWSCompromisedKeyQuarantine "), 300_000)...), `"}}`...))
	liar := gz(quarantine(t))
	binary.LittleEndian.PutUint32(liar[len(liar)-4:], 32<<20) // ISIZE
	for _, value := range [][]byte{big, liar} {
		s := mustNew(t, Config{}).NewScanner()
		s.Match(value, nil)
		if cap(s.inflated) > keepBytes || cap(s.arena.buf)*16 > keepBytes || cap(s.walker.buf) > keepBytes || s.walker.b != nil {
			t.Errorf("kept inflated %d, arena %d, walker buf %d, walker text %v", cap(s.inflated), cap(s.arena.buf), cap(s.walker.buf), s.walker.b != nil)
		}
	}
}
