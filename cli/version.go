package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/postgres"
)

// devVersion is the version of a binary built without
// -ldflags "-X main.version=…".
const devVersion = "dev"

// VersionInfo is what `ffrtmp version` prints: this binary's version and
// the versions of the interfaces and formats it speaks.
type VersionInfo struct {
	// Version is set at build time (-ldflags "-X main.version=…"), else
	// "dev".
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from, if the Go
	// toolchain recorded it; Modified says the work tree had changes.
	Revision  string `json:"revision,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
	// API is the HTTP API's version (the /v1 of its routes) and OpenAPI
	// the version of its OpenAPI document.
	API     string `json:"api"`
	OpenAPI string `json:"openapi"`
	// BoltSchema is the layout version of bolt state files, and
	// PostgresMigration the latest PostgreSQL migration, NNN_name.
	BoltSchema        int    `json:"bolt_schema"`
	PostgresMigration string `json:"postgres_migration"`
}

// Versions returns the VersionInfo of this binary, whose build-time
// version is version ("" for dev).
func Versions(version string) (VersionInfo, error) {
	v := VersionInfo{Version: version, GoVersion: runtime.Version(), BoltSchema: bolt.SchemaVersion}
	if v.Version == "" {
		v.Version = devVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	v.API, v.OpenAPI = server.OpenAPIVersion()
	ms, err := postgres.Migrations()
	if err != nil {
		return v, err
	}
	if len(ms) > 0 {
		last := ms[len(ms)-1]
		v.PostgresMigration = fmt.Sprintf("%03d_%s", last.Version, last.Name)
	}
	return v, nil
}

// String is the one-line version: "1.2.0 (rev 0123abcd)".
func (v VersionInfo) String() string {
	s := v.Version
	if v.Revision != "" {
		rev := v.Revision[:min(12, len(v.Revision))]
		if v.Modified {
			rev += ", modified"
		}
		s += " (rev " + rev + ")"
	}
	return s
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the binary's version, the API version and the store schema versions",
		Action: func(c *cli.Context) error {
			js, err := outputJSON(c)
			if err != nil {
				return err
			}
			return PrintVersion(envOf(c).Stdout, js, envOf(c).Version)
		},
	}
}

// PrintVersion prints the VersionInfo of a binary of version, as a table
// or JSON.
func PrintVersion(w io.Writer, asJSON bool, version string) error {
	v, err := Versions(version)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(w, v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ffrtmp:\t%s\n", v)
	fmt.Fprintf(tw, "API:\t%s (OpenAPI document %s)\n", v.API, v.OpenAPI)
	fmt.Fprintf(tw, "Bolt schema:\t%d\n", v.BoltSchema)
	fmt.Fprintf(tw, "PostgreSQL schema:\t%s\n", v.PostgresMigration)
	fmt.Fprintf(tw, "Go:\t%s\n", v.GoVersion)
	return tw.Flush()
}
