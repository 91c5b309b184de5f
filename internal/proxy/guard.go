package proxy

import (
	"sync/atomic"
	"time"
)

// idleGuard calls onFire once when a request has moved no byte for idle,
// or has lasted total (either may be 0 for off). touch is an atomic store,
// cheap enough for every read and write; the timers re-arm themselves for
// the remaining time instead of being reset on each touch.
//
// A guard serves one request after another (one per HTTP/1 connection, so
// that a request allocates no timer): arm starts watching the next one. A
// timer callback of an earlier request that runs late re-checks the times
// of the current one, so it can never fire early.
type idleGuard struct {
	idle, total time.Duration // fixed for the guard's life
	start       atomic.Int64  // arm time, Unix ns
	last        atomic.Int64  // last byte moved, Unix ns
	fire        atomic.Bool
	stopped     atomic.Bool
	onFire      func()
	idleT       *time.Timer
	totalT      *time.Timer
}

// newIdleGuard returns a guard armed for a first request.
func newIdleGuard(idle, total time.Duration, onFire func()) *idleGuard {
	g := newStoppedGuard(idle, total, onFire)
	g.arm()
	return g
}

// newStoppedGuard returns a guard to arm later.
func newStoppedGuard(idle, total time.Duration, onFire func()) *idleGuard {
	g := &idleGuard{idle: idle, total: total, onFire: onFire}
	g.stopped.Store(true)
	if idle > 0 {
		g.idleT = time.AfterFunc(time.Duration(1<<62), g.check)
		g.idleT.Stop()
	}
	if total > 0 {
		g.totalT = time.AfterFunc(time.Duration(1<<62), g.checkTotal)
		g.totalT.Stop()
	}
	return g
}

// arm starts watching a request.
func (g *idleGuard) arm() {
	now := time.Now().UnixNano()
	g.start.Store(now)
	g.last.Store(now)
	g.fire.Store(false)
	g.stopped.Store(false)
	if g.idleT != nil {
		g.idleT.Reset(g.idle)
	}
	if g.totalT != nil {
		g.totalT.Reset(g.total)
	}
}

func (g *idleGuard) touch() {
	if g.idleT != nil {
		g.last.Store(time.Now().UnixNano())
	}
}

func (g *idleGuard) check()      { g.expire(&g.last, g.idle, g.idleT) }
func (g *idleGuard) checkTotal() { g.expire(&g.start, g.total, g.totalT) }

// expire fires the guard when limit has passed since the time in from, or
// re-arms t for the time that remains.
func (g *idleGuard) expire(from *atomic.Int64, limit time.Duration, t *time.Timer) {
	if g.stopped.Load() {
		return
	}
	since := time.Since(time.Unix(0, from.Load()))
	if since < limit {
		t.Reset(limit - since)
		return
	}
	g.trigger()
}

func (g *idleGuard) trigger() {
	if g.stopped.Load() {
		return
	}
	if g.fire.CompareAndSwap(false, true) {
		g.onFire()
	}
}

func (g *idleGuard) fired() bool { return g.fire.Load() }

// stop disarms the guard until the next arm.
func (g *idleGuard) stop() {
	g.stopped.Store(true)
	if g.idleT != nil {
		g.idleT.Stop()
	}
	if g.totalT != nil {
		g.totalT.Stop()
	}
}
