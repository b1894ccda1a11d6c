package consumer

import (
	"cmp"
	"slices"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// Successive quarantines of one user. AWS quarantines a user again on a
// new exposure of a key, and each quarantine's alert opens a watch: an
// entry with its own alert id, under the user's one key. The entries of a
// user arrive in any order of their opening times (two quarantines close
// together are on different source partitions, which members match
// independently), so a loader keeps every watch of the user it has read,
// by opening time, and:
//
//   - hands the matcher one window per watch, end to end: watch l gets
//     (O_l, min(U'_l, O_l+1)], the last (O_k, U'_k], where U'_l is the
//     latest end among watches 1..l by opening time (a later quarantine
//     never shortens the watch). The windows cover the union of the
//     watches' own windows (O_l, U_l], and a call is a finding of one
//     watch only: the latest quarantine before it that the loop had.
//   - gives each watch, when it applies it, its gap: its own window less
//     the windows of every watch of the user applied before it (seen).
//     The watch's case worker reports the calls in its gap below its
//     markers.
//
// Why each call of the user in a watched window is one finding. Take a call
// at offset o of partition p with event time t. The markers of a watch
// read after another are never below the other's: every loader reads the
// key's partition in order, so it has the earlier-read watch loaded when
// it has the later one, and the loop writes the markers of every loaded
// watch that has none at its first batch. At o the loop had loaded the
// watches whose markers are at or below o, and reported t if some loaded
// watch's window holds it.
//   - If it did not: let l be the first watch read whose window holds t. Its
//     marker is above o (else it was loaded at o), and no watch read before
//     it holds t, so t is in l's gap: l's case worker reports it.
//   - Never twice: the case worker of l reports t at o only below l's
//     marker, where only watches read before l can have been loaded (those
//     read after have markers at or above l's), and none of them holds t
//     (t is in l's gap); two case workers never both have t in their gaps,
//     which exclude every window read before them.
//
// Limits: an entry dropped by expiry (an hour after its window's end, as
// an entry is) or by maxWatchesPerUser no longer matches late calls of its
// window; a loader that starts after compaction removed an earlier
// entry's record has not got that watch.

// maxWatchesPerUser bounds the watches a loader keeps for one user (the
// earliest opened is dropped first): a user quarantined over and over
// keeps a bounded watchlist.
const maxWatchesPerUser = 32

// span is a window of event time, (from, to].
type span struct{ from, to time.Time }

// userWatches is what a loader holds for one user (one key).
type userWatches struct {
	// watches are the user's watches loaded, by opening time.
	watches []loadedEntry
	// seen is the union of the windows of every watch applied for the
	// user while some was loaded, merged and in order.
	seen []span
}

// add applies watch e, read after the ones held, and reports whether it
// is new: a watch of an alert id held already is the same quarantine read
// again and changes nothing.
func (u *userWatches) add(e loadedEntry) bool {
	if slices.ContainsFunc(u.watches, func(h loadedEntry) bool { return h.AlertID == e.AlertID }) {
		return false
	}
	own := span{e.OpenedAt, e.Until}
	e.gap = subtractSpans(own, u.seen)
	u.seen = addSpan(u.seen, own)
	i, _ := slices.BinarySearchFunc(u.watches, e, func(a, b loadedEntry) int {
		return cmp.Or(a.OpenedAt.Compare(b.OpenedAt), cmp.Compare(a.AlertID, b.AlertID))
	})
	u.watches = slices.Insert(u.watches, i, e)
	if len(u.watches) > maxWatchesPerUser {
		u.watches = slices.Delete(u.watches, 0, len(u.watches)-maxWatchesPerUser)
	}
	return true
}

// windowEnds returns the end of each watch's window in the matcher:
// min(U'_l, O_l+1), U'_k for the last.
func (u *userWatches) windowEnds() []time.Time {
	ends := make([]time.Time, len(u.watches))
	var until time.Time
	for i, l := range u.watches {
		until = maxTime(until, l.Until)
		ends[i] = until
		if i+1 < len(u.watches) {
			ends[i] = minTime(until, u.watches[i+1].OpenedAt)
		}
	}
	return ends
}

// windows returns the matcher's entries of the user's watches, one window
// per watch, end to end; a watch opened at the same time as the next has
// none (the next one's holds its calls).
func (u *userWatches) windows() []matcher.WatchEntry {
	out := make([]matcher.WatchEntry, 0, len(u.watches))
	for i, end := range u.windowEnds() {
		w := watchEntry(u.watches[i].WatchEntry)
		w.Until = end
		if w.Until.After(w.OpenedAt) {
			out = append(out, w)
		}
	}
	return out
}

// gapWindows returns the matcher's entries of e's gap, which its case
// worker reports below its markers.
func (e loadedEntry) gapWindows() []matcher.WatchEntry {
	out := make([]matcher.WatchEntry, 0, len(e.gap))
	for _, s := range e.gap {
		w := watchEntry(e.WatchEntry)
		w.OpenedAt, w.Until = s.from, s.to
		out = append(out, w)
	}
	return out
}

// addSpan returns the union of spans (merged, in order) and s.
func addSpan(spans []span, s span) []span {
	out := make([]span, 0, len(spans)+1)
	for _, t := range spans {
		switch {
		case t.to.Before(s.from):
			out = append(out, t)
		case s.to.Before(t.from):
			out = append(out, s)
			s = t
		default:
			s = span{minTime(s.from, t.from), maxTime(s.to, t.to)}
		}
	}
	return append(out, s)
}

// subtractSpans returns what of s no span of spans (merged, in order)
// holds.
func subtractSpans(s span, spans []span) []span {
	var out []span
	for _, t := range spans {
		if !t.to.After(s.from) || !t.from.Before(s.to) {
			continue
		}
		if t.from.After(s.from) {
			out = append(out, span{s.from, t.from})
		}
		s.from = maxTime(s.from, t.to)
	}
	if s.to.After(s.from) {
		out = append(out, s)
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
