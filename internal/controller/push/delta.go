package push

import (
	"github.com/meshctl/mesh/internal/controller/registry"
	"github.com/meshctl/mesh/internal/meshapi"
)

// delta returns what turns old into new, both sorted by address: the
// endpoints that are new or changed, and the addresses that are gone.
func delta(old, new []meshapi.Endpoint) (upsert []meshapi.Endpoint, remove []string) {
	i, j := 0, 0
	for i < len(old) || j < len(new) {
		switch {
		case j == len(new) || i < len(old) && old[i].Address < new[j].Address:
			remove = append(remove, old[i].Address)
			i++
		case i == len(old) || new[j].Address < old[i].Address:
			upsert = append(upsert, new[j])
			j++
		default:
			if !registry.EqualEndpoint(old[i], new[j]) {
				upsert = append(upsert, new[j])
			}
			i++
			j++
		}
	}
	return upsert, remove
}
