package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// bindConfig gives every flag of cmd a value from, in falling precedence: the
// command line, a MESHCTL_<FLAG> environment variable, the config file's
// "<command path>.<flag>" key, then its top-level "<flag>" key. It is the one
// place where meshctl reads its environment and config file.
//
// The config file is --config, else $MESHCTL_CONFIG, else
// <user config dir>/meshctl/config.yaml when that exists.
func bindConfig(cmd *cobra.Command, getenv func(string) string) error {
	v := viper.New()
	v.SetEnvPrefix("MESHCTL")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_", ".", "_"))

	path, explicit := configPath(cmd, getenv)
	if path != "" {
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			var notFound *os.PathError
			if explicit || !errors.As(err, &notFound) {
				return fmt.Errorf("reading config file %s: %w", path, err)
			}
		} else if err := checkConfigKeys(cmd.Root(), v.AllKeys()); err != nil {
			return fmt.Errorf("config file %s: %w", path, err)
		}
	}

	// Key of a command-specific setting: "install.wait" for `meshctl install
	// --wait`, "diagnose.proxy-status.output" for deeper commands.
	scope := strings.TrimPrefix(strings.ReplaceAll(cmd.CommandPath(), " ", "."), cmd.Root().Name()+".")
	var errs []error
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || fl.Name == "config" || fl.Name == "help" {
			return
		}
		val, source, ok := lookup(v, getenv, scope, fl.Name)
		if !ok {
			return
		}
		if err := setFlag(fl, val); err != nil {
			errs = append(errs, fmt.Errorf("%s: invalid value for --%s: %w", source, fl.Name, err))
		}
	})
	return errors.Join(errs...)
}

func configPath(cmd *cobra.Command, getenv func(string) string) (path string, explicit bool) {
	if fl := cmd.Flags().Lookup("config"); fl != nil && fl.Changed {
		return fl.Value.String(), true
	}
	if p := getenv("MESHCTL_CONFIG"); p != "" {
		return p, true
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", false
	}
	return filepath.Join(dir, "meshctl", "config.yaml"), false
}

func lookup(v *viper.Viper, getenv func(string) string, scope, name string) (val any, source string, ok bool) {
	env := "MESHCTL_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	if s, set := lookupEnv(getenv, env); set {
		return s, "environment variable " + env, true
	}
	if scope != "" && v.IsSet(scope+"."+name) {
		return v.Get(scope + "." + name), "config key " + scope + "." + name, true
	}
	if v.IsSet(name) {
		return v.Get(name), "config key " + name, true
	}
	return nil, "", false
}

func lookupEnv(getenv func(string) string, key string) (string, bool) {
	s := getenv(key)
	return s, s != ""
}

// setFlag sets a flag from a config or environment value. Lists from the
// config file set repeatable flags element by element; a list from the
// environment is comma-separated.
func setFlag(fl *pflag.Flag, val any) error {
	if list, ok := val.([]any); ok {
		sv, isSlice := fl.Value.(pflag.SliceValue)
		if !isSlice {
			return fmt.Errorf("a list is not valid for this flag")
		}
		items := make([]string, len(list))
		for i, item := range list {
			items[i] = fmt.Sprint(item)
		}
		return sv.Replace(items)
	}
	s := fmt.Sprint(val)
	if sv, isSlice := fl.Value.(pflag.SliceValue); isSlice {
		return sv.Replace(strings.Split(s, ","))
	}
	return fl.Value.Set(s)
}

// checkConfigKeys refuses config keys that set nothing: a misspelt command
// ("instal:") or flag would otherwise be ignored without a word. A key is
// a flag of some command at the top level, or "<command>[.<subcommand>].<flag>"
// naming a flag of that command.
func checkConfigKeys(root *cobra.Command, keys []string) error {
	sort.Strings(keys)
	var errs []error
	for _, key := range keys {
		if err := checkConfigKey(root, key); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func checkConfigKey(root *cobra.Command, key string) error {
	parts := strings.Split(key, ".")
	cmd := root
	for len(parts) > 1 {
		sub := findSubcommand(cmd, parts[0])
		if sub == nil {
			return fmt.Errorf("unknown key %q: %q is not a meshctl command (commands: %s)", key, parts[0], strings.Join(commandNames(cmd), ", "))
		}
		cmd, parts = sub, parts[1:]
	}
	name := parts[0]
	if cmd == root {
		if findSubcommand(root, name) != nil {
			return fmt.Errorf("key %q must hold the flags of `meshctl %s`, as a map", key, name)
		}
		if anyCommandHasFlag(root, name) {
			return nil
		}
		return fmt.Errorf("unknown key %q: no meshctl command has a flag --%s", key, name)
	}
	if cmd.Flags().Lookup(name) != nil || cmd.InheritedFlags().Lookup(name) != nil {
		return nil
	}
	return fmt.Errorf("unknown key %q: `%s` has no flag --%s", key, cmd.CommandPath(), name)
}

func findSubcommand(cmd *cobra.Command, name string) *cobra.Command {
	for _, c := range cmd.Commands() {
		if c.Name() == name {
			return c
		}
	}
	return nil
}

func commandNames(cmd *cobra.Command) []string {
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	return names
}

func anyCommandHasFlag(cmd *cobra.Command, name string) bool {
	if cmd.Flags().Lookup(name) != nil || cmd.PersistentFlags().Lookup(name) != nil {
		return true
	}
	for _, c := range cmd.Commands() {
		if anyCommandHasFlag(c, name) {
			return true
		}
	}
	return false
}
