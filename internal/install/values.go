package install

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshctl/mesh/internal/wellknown"
)

// storedValuesKey is the key of the user's values in the values Secret.
const storedValuesKey = "values.yaml"

func decodeStoredValues(b []byte) (map[string]any, error) {
	values := map[string]any{}
	if len(b) == 0 {
		return values, nil
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		return nil, err
	}
	return values, nil
}

// valuesSecret is the Secret that records an installation: the user's values
// (never credentials: those live in their own Secrets) and, in its labels,
// the version that wrote it.
func valuesSecret(namespace, version string, labels map[string]string, values map[string]any) (*corev1.Secret, error) {
	b, err := yaml.Marshal(values)
	if err != nil {
		return nil, fmt.Errorf("encoding values: %w", err)
	}
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	l[wellknown.LabelComponent] = "install"
	l[wellknown.LabelVersion] = version
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: wellknown.ValuesSecretName, Namespace: namespace, Labels: l},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{storedValuesKey: b},
	}, nil
}
