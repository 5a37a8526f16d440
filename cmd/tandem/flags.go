package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// flags are the command-line options. Each, when given, overrides the
// config file and the environment.
type flags struct {
	config    string
	data      string
	logLevel  string
	logFormat string
}

// usage is printed by -h.
const usage = `Usage: tandem [flags]
       tandem ctl [flags] COMMAND   (administer a running broker; tandem ctl -h)

Tandem is a message broker speaking MQTT and STOMP over one engine.
With no flags it starts on the embedded defaults (data in ./data).

Settings are layered: defaults < --config file < TANDEM_* environment
variables < flags. configs/tandem.yaml documents every setting.

Flags:
`

// parseFlags parses args (without the program name). It returns
// flag.ErrHelp after printing usage to out for -h; other errors are one
// line and nothing is printed.
func parseFlags(args []string, out io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("tandem", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.config, "config", "", "YAML configuration `file`")
	fs.StringVar(&f.data, "data", "", "data `dir`ectory (default ./data; env TANDEM_DATA_DIR)")
	fs.StringVar(&f.logLevel, "log-level", "", "log `level`: "+strings.Join(logLevels, ", ")+" (default info; env TANDEM_LOG_LEVEL)")
	fs.StringVar(&f.logFormat, "log-format", "", "log `format`: "+strings.Join(logFormats, ", ")+" (default auto; env TANDEM_LOG_FORMAT)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(out)
			_, _ = fmt.Fprint(out, usage)
			fs.PrintDefaults()
		}
		return flags{}, err
	}
	if fs.NArg() > 0 {
		return flags{}, fmt.Errorf("unexpected argument %q (tandem takes only flags; see tandem -h)", fs.Arg(0))
	}
	return f, nil
}

// apply sets the options given on the command line.
func (f flags) apply(c *Config) {
	if f.data != "" {
		c.DataDir = f.data
	}
	if f.logLevel != "" {
		c.Log.Level = f.logLevel
	}
	if f.logFormat != "" {
		c.Log.Format = f.logFormat
	}
}
