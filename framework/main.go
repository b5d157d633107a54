package framework

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
)

// LoadConfig reads a config file (strictly: unknown keys are errors) into
// cfg — a *Config, or a bot's or bridge's own struct embedding one — and
// sets the framework config's DataDir to the file's directory.
func LoadConfig(path string, cfg any, fw *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	fw.DataDir = abs
	return nil
}

// DecodeNode decodes a YAML node (a section of a larger file, such as a
// bridge's section of switchboard.yaml) into v as strictly as LoadConfig:
// unknown keys are errors. (yaml.Node.Decode has no such switch, so the
// node is re-encoded and decoded by a strict decoder.)
func DecodeNode(node *yaml.Node, v any) error {
	data, err := yaml.Marshal(node)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// ApplyRunSection applies a component's section of switchboard.yaml (the
// bridges `switchboard run` starts beside its homeserver) over cfg, which
// holds the component's defaults, fw being the framework Config inside it.
// Before the section's keys — which may override any of it — come the
// homeserver the component runs beside (homeserverURL reaches it,
// serverName is its name), the registration in DATA/appservices/{id}.yaml
// (where the homeserver loads it) and any free loopback port for the
// appservice (the component binds it, rewriting the registration, before
// the homeserver loads registrations). The section's own "enabled" key is
// returned (nil when absent), not decoded into cfg. Unknown keys are
// errors.
func ApplyRunSection(section *yaml.Node, cfg any, fw *Config, id, serverName, homeserverURL, dataDir string) (enabled *bool, err error) {
	fw.ServerName, fw.HomeserverURL = serverName, homeserverURL
	fw.Registration = filepath.Join("appservices", id+".yaml")
	fw.Listen = "127.0.0.1:0"
	defer func() { fw.DataDir = dataDir }()
	if section == nil || section.Kind == 0 {
		return nil, nil
	}
	if section.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: must be a mapping", id)
	}
	keys := *section // a copy: the caller's node keeps its "enabled"
	keys.Content = nil
	for i := 0; i+1 < len(section.Content); i += 2 {
		if section.Content[i].Value == "enabled" {
			var on bool
			if err := section.Content[i+1].Decode(&on); err != nil {
				return nil, fmt.Errorf("%s.enabled: %w", id, err)
			}
			enabled = &on
			continue
		}
		keys.Content = append(keys.Content, section.Content[i], section.Content[i+1])
	}
	if err := DecodeNode(&keys, cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	return enabled, nil
}

// Main is the main function of a bot or bridge binary with a framework
// config only:
//
//	NAME [-config NAME.yaml]                        run until SIGINT/SIGTERM
//	NAME [-config NAME.yaml] generate-registration  write the registration file and exit
//
// run is called with the loaded config, a logger, and a context that ends
// on SIGINT or SIGTERM.
func Main(name string, run func(ctx context.Context, cfg *Config, log zerolog.Logger) error) {
	cfg := &Config{}
	MainWith(name, cfg, cfg, run)
}

// Validator is a config that checks itself and fills in its defaults:
// Config, bridge.Config, or a bot's or bridge's own.
type Validator interface{ Validate() error }

// MainWith is Main for a bot or bridge with a config of its own: cfg
// points to it (it is loaded from the file, strictly, and validated), fw
// to the framework Config inside it.
func MainWith[C Validator](name string, cfg C, fw *Config, run func(ctx context.Context, cfg C, log zerolog.Logger) error) {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	path := fs.String("config", name+".yaml", "config file")
	_ = fs.Parse(os.Args[1:])
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Str("app", name).Logger()
	if lvl, err := zerolog.ParseLevel(os.Getenv("LOG_LEVEL")); err == nil && lvl != zerolog.NoLevel {
		log = log.Level(lvl)
	} else {
		log = log.Level(zerolog.InfoLevel)
	}
	if err := LoadConfig(*path, cfg, fw); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: config %s: %v\n", name, *path, err)
		os.Exit(2)
	}
	switch fs.Arg(0) {
	case "generate-registration":
		_, written, err := fw.EnsureRegistration()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			os.Exit(1)
		}
		state := "is up to date"
		if written {
			state = "written"
		}
		fmt.Printf("Registration %s: %s\nLoad it into the homeserver, e.g. `switchboard appservice add %s`.\n",
			state, fw.path(fw.Registration), fw.path(fw.Registration))
		return
	case "":
	default:
		fmt.Fprintf(os.Stderr, "%s: unknown command %q (commands: generate-registration)\n", name, fs.Arg(0))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg("Stopped with an error")
		os.Exit(1)
	}
}
