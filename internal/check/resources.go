package check

import (
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/wellknown"
)

// resource is a kind of object the chart renders.
type resource struct {
	Kind       string
	GVR        schema.GroupVersionResource
	Namespaced bool
}

func (r resource) describe(name, namespace string) string {
	if r.Namespaced {
		return r.Kind + " " + namespace + "/" + name
	}
	return r.Kind + " " + name
}

var (
	namespaces           = resource{"Namespace", schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, false}
	crds                 = resource{"CustomResourceDefinition", schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}, false}
	serviceAccounts      = resource{"ServiceAccount", schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, true}
	secrets              = resource{"Secret", schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, true}
	configMaps           = resource{"ConfigMap", schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, true}
	roles                = resource{"Role", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"}, true}
	roleBindings         = resource{"RoleBinding", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}, true}
	clusterRoles         = resource{"ClusterRole", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}, false}
	clusterRoleBindings  = resource{"ClusterRoleBinding", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}, false}
	services             = resource{"Service", schema.GroupVersionResource{Version: "v1", Resource: "services"}, true}
	deployments          = resource{"Deployment", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, true}
	podDisruptionBudgets = resource{"PodDisruptionBudget", schema.GroupVersionResource{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"}, true}
	mutatingWebhooks     = resource{"MutatingWebhookConfiguration", schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "mutatingwebhookconfigurations"}, false}
	meshConfigs          = resource{meshconfig.Kind, meshconfig.GroupVersionResource, true}
)

// chartResources are the kinds the chart renders, in its apply order.
// `check --pre` asks whether the user may create each, and the version check
// reads the version label of every object of these kinds. A test renders the
// chart to keep this list in step with it.
var chartResources = []resource{
	namespaces,
	crds,
	serviceAccounts,
	secrets,
	configMaps,
	roles,
	roleBindings,
	clusterRoles,
	clusterRoleBindings,
	services,
	deployments,
	podDisruptionBudgets,
	mutatingWebhooks,
	meshConfigs,
}

// MeshConfigCRDName is the name of the MeshConfig CustomResourceDefinition.
const meshConfigCRDName = meshconfig.Resource + "." + wellknown.APIGroup

// object names one object of the control plane.
type object struct {
	resource
	Name string
}

// Objects that the existence checks look for by name. With the names the
// identity, webhook and installation checks look for (checkedObjects), they
// cover every object the chart renders but the optional
// PodDisruptionBudget; a test keeps the two in step.
var (
	controllerRBAC = []object{
		{serviceAccounts, wellknown.ControllerName},
		{roles, wellknown.ControllerName},
		{roleBindings, wellknown.ControllerName},
		{clusterRoles, wellknown.ControllerName},
		{clusterRoleBindings, wellknown.ControllerName},
	}
	controllerWorkload = []object{
		{deployments, wellknown.ControllerName},
		{services, wellknown.ControllerName},
	}
)

// checkedObjects are the objects of the chart some check looks for by name.
func checkedObjects(namespace string) []object {
	objs := []object{
		{namespaces, namespace},
		{crds, meshConfigCRDName},
		{meshConfigs, wellknown.MeshConfigName},
		{configMaps, wellknown.TrustAnchorsName},
		{secrets, wellknown.IdentitySecretName},
		{secrets, wellknown.WebhookSecretName},
		{mutatingWebhooks, wellknown.WebhookName},
	}
	objs = append(objs, controllerRBAC...)
	return append(objs, controllerWorkload...)
}
