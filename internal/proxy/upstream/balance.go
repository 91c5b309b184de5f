package upstream

// Weighted is an endpoint as one service port of one table names it: the
// shared live state, and what the table says about it.
type Weighted struct {
	*Endpoint
	// Weight is the endpoint's relative share of new requests, at least 1
	// (endpoints out of rotation are left out of the table).
	Weight int
	// Meshed says a proxy serves the endpoint: connections to it use mesh
	// TLS and the server must present the key's identity.
	Meshed bool
}

// P2C chooses an endpoint by the power of two choices: two endpoints drawn
// at random in proportion to their weights, and of those the one with
// fewer requests in flight per unit of weight. It spreads load nearly as
// well as least-requests over all endpoints at the cost of two draws, and
// never sends a burst to one endpoint the way round robin after a reload
// can.
type P2C struct {
	// Rand returns a uniform integer in [0, n). Tests inject their own so
	// that the choice is deterministic.
	Rand func(n int) int
}

// Pick returns the chosen endpoint, or nil when there is none. The
// pointer is into eps.
func (b P2C) Pick(eps []Weighted) *Weighted {
	switch len(eps) {
	case 0:
		return nil
	case 1:
		return &eps[0]
	}
	total := 0
	for i := range eps {
		total += eps[i].Weight
	}
	x := b.draw(eps, total)
	y := b.draw(eps, total)
	if x == y {
		return x
	}
	// Compare inFlight/weight without division.
	if x.InFlight()*int64(y.Weight) <= y.InFlight()*int64(x.Weight) {
		return x
	}
	return y
}

// draw returns an endpoint at random in proportion to its weight; total is
// the sum of the weights.
func (b P2C) draw(eps []Weighted, total int) *Weighted {
	n := b.Rand(total)
	for i := range eps {
		if n < eps[i].Weight {
			return &eps[i]
		}
		n -= eps[i].Weight
	}
	return &eps[len(eps)-1]
}
