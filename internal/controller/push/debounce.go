package push

import "time"

// debouncer decides when a batch of changes is flushed: Quiet after the
// last change, but never later than Max after the first, so that a steady
// trickle of changes (a rollout) cannot hold every push back.
type debouncer struct {
	quiet, max  time.Duration
	first, last time.Time
	pending     bool
	changes     int
}

// add records a change at now.
func (d *debouncer) add(now time.Time) {
	if !d.pending {
		d.first, d.pending = now, true
	}
	d.last = now
	d.changes++
}

// deadline is when the pending batch is due; zero when nothing is pending.
func (d *debouncer) deadline() time.Time {
	if !d.pending {
		return time.Time{}
	}
	quiet, max := d.last.Add(d.quiet), d.first.Add(d.max)
	if max.Before(quiet) {
		return max
	}
	return quiet
}

// due reports whether the batch must be flushed at now.
func (d *debouncer) due(now time.Time) bool {
	return d.pending && !now.Before(d.deadline())
}

// reset starts a new batch and returns how many changes the last one had.
func (d *debouncer) reset() int {
	n := d.changes
	*d = debouncer{quiet: d.quiet, max: d.max}
	return n
}
