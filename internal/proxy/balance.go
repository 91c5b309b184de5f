package proxy

import "github.com/meshctl/mesh/internal/proxy/config"

// pick chooses an endpoint by the power of two choices: two endpoints drawn
// at random in proportion to their weights, and of those the one with fewer
// requests in flight per unit of weight. It spreads load nearly as well as
// least-requests over all endpoints at the cost of two draws, and never
// sends a burst to one endpoint the way round robin after a reload can.
// rnd returns a uniform integer in [0, n). It returns nil when there is no
// endpoint.
func pick(eps []*config.EndpointState, rnd func(n int) int) *config.EndpointState {
	switch len(eps) {
	case 0:
		return nil
	case 1:
		return eps[0]
	}
	a := drawWeighted(eps, rnd)
	b := drawWeighted(eps, rnd)
	if a == b {
		return a
	}
	// Compare active/weight without division.
	if a.Active.Load()*int64(b.Weight) <= b.Active.Load()*int64(a.Weight) {
		return a
	}
	return b
}

func drawWeighted(eps []*config.EndpointState, rnd func(n int) int) *config.EndpointState {
	total := 0
	for _, e := range eps {
		total += e.Weight
	}
	n := rnd(total)
	for _, e := range eps {
		if n < e.Weight {
			return e
		}
		n -= e.Weight
	}
	return eps[len(eps)-1]
}
