package push

import "time"

// debouncer decides when a batch of changes is flushed. A change that
// comes after a quiet period (nothing flushed for Quiet) is flushed at
// once, so that an isolated change pays no window; later changes wait
// until Quiet after the last one, but never longer than Max after the
// first, so that a steady trickle of changes (a rollout) cannot hold every
// push back.
type debouncer struct {
	quiet, max  time.Duration
	first, last time.Time
	flushed     time.Time // when the last batch was flushed
	pending     bool
	leading     bool // the batch began after a quiet period: due at once
	changes     int
}

// add records a change at now.
func (d *debouncer) add(now time.Time) {
	if !d.pending {
		d.first, d.pending = now, true
		d.leading = d.flushed.IsZero() || now.Sub(d.flushed) >= d.quiet
	}
	d.last = now
	d.changes++
}

// deadline is when the pending batch is due; zero when nothing is pending.
func (d *debouncer) deadline() time.Time {
	if !d.pending {
		return time.Time{}
	}
	if d.leading {
		return d.first
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

// reset starts a new batch, flushed at now, and returns how many changes
// the last one had.
func (d *debouncer) reset(now time.Time) int {
	n := d.changes
	*d = debouncer{quiet: d.quiet, max: d.max, flushed: now}
	return n
}
