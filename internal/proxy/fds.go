package proxy

import "time"

// The file-descriptor budget: each listener may hold a share of the
// process's RLIMIT_NOFILE, so that connections on one listener (a
// neighbour flooding the inbound port) cannot take the descriptors the
// other needs (the pod's own outbound traffic), nor those of the admin
// port, the control plane and the upstream pools. docs/proxy.md, "File
// descriptors", explains the numbers.

// fdsPerConn is what a connection counts against its listener's budget:
// its own socket and its upstream's. Splice pipes are lent only while
// bytes move, from splicePipes, which has a cap of its own.
const fdsPerConn = 2

// fdPlan divides the soft RLIMIT_NOFILE.
type fdPlan struct {
	// Limit is the soft RLIMIT_NOFILE the plan was made for.
	Limit uint64
	// Listener is each listener's budget, in descriptors.
	Listener int
	// Pipes is how many splice pipes (two descriptors each) may be open
	// at once.
	Pipes int
	// Reserve is what is left for everything else: the admin port, the
	// control plane, pooled upstream connections, logs.
	Reserve int
}

// planFDs shares limit out: a tenth to splice pipes (at most 4096 of
// them), a tenth (at least 256) kept in reserve, and the rest in halves
// to the two listeners. A limit of 0 means unknown and is taken as 1024,
// the kernel's usual default.
func planFDs(limit uint64) fdPlan {
	if limit == 0 {
		limit = 1024
	}
	l := int(min(limit, 1<<30))
	pipes := min(l/20, 4096)
	reserve := max(l/10, 256)
	return fdPlan{
		Limit:    limit,
		Listener: max((l-2*pipes-reserve)/2, fdsPerConn),
		Pipes:    pipes,
		Reserve:  reserve,
	}
}

// splicePipes lends pipes to every opaque copy of the process.
var splicePipes = &pipePool{ttl: time.Second, max: planFDs(softNofile()).Pipes}

// fdBudget is a listener's budget under limits: limits.fdBudget when set,
// else the plan's share.
func (p *Proxy) fdBudget(fdBudget uint) int64 {
	if fdBudget > 0 {
		return int64(min(fdBudget, 1<<40))
	}
	return int64(p.fds.Listener)
}
