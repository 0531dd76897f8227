//! Generates the package's man pages and shell completions from their
//! sources, so they cannot drift from what they describe:
//! - `spoolfs(8)` and one page per subcommand from the CLI definition
//!   (`spoolfs::cli::Cli`) with `clap_mangen`;
//! - `spoolfs.toml(5)` from `docs/CONFIGURATION.md` (the configuration
//!   reference), converted to roff by the small converter below;
//! - bash and zsh completions with `clap_complete`.
//!
//! Usage: `cargo run --example gen-docs -- OUT_DIR` (run by
//! `scripts/package.sh`); writes `OUT_DIR/man/*.{5,8}` and
//! `OUT_DIR/completions/{spoolfs,_spoolfs}`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use spoolfs::cli::Cli;

fn main() -> io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: gen-docs OUT_DIR"));
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;

    // clap's own `help` subcommand would be listed without a page of its
    // own; the pages leave it out.
    let cli = Cli::command().disable_help_subcommand(true);
    write_man_pages(&cli, &man)?;

    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIGURATION.md");
    let roff = markdown_to_roff(&fs::read_to_string(reference)?, "SPOOLFS.TOML", "5");
    fs::write(man.join("spoolfs.toml.5"), roff)?;

    let mut cmd = Cli::command();
    for (shell, file) in [(Shell::Bash, "spoolfs"), (Shell::Zsh, "_spoolfs")] {
        let mut f = fs::File::create(completions.join(file))?;
        clap_complete::generate(shell, &mut cmd, "spoolfs", &mut f);
    }
    Ok(())
}

const SEE_ALSO: &str = r#".SH FILES
.TP
\fI/etc/spoolfs/spoolfs.toml\fR
the configuration (see \fBspoolfs.toml\fR(5))
.TP
\fI/var/lib/spoolfs/limits.json\fR
run-time limits set with \fBspoolfs quota set\fR (in \fBstate_dir\fR)
.TP
\fI/var/log/spoolfs.log\fR
the log of daemons started by \fBmount.fuse.spoolfs\fR (fstab); under systemd, the journal
.TP
\fI/usr/share/doc/spoolfs/\fR
README.md, CONFIGURATION.md, OPERATIONS.md, SEMANTICS.md
.SH "SEE ALSO"
\fBspoolfs.toml\fR(5), \fBmount\fR(8), \fBfstab\fR(5), \fBfusermount3\fR(1), \fBsystemctl\fR(1)
"#;

/// `spoolfs.8` and a page per subcommand (`spoolfs-quota-set.8`), section 8
/// (a daemon run by root).
fn write_man_pages(cli: &clap::Command, dir: &Path) -> io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cli.clone())
        .section("8")
        .render(&mut page)?;
    page.extend_from_slice(SEE_ALSO.as_bytes());
    fs::write(dir.join("spoolfs.8"), page)?;
    write_subcommand_pages(cli, "spoolfs", "spoolfs", dir)
}

/// Pages named as clap_mangen refers to them: `PARENT-SUB`.
fn write_subcommand_pages(
    cmd: &clap::Command,
    page_name: &str,
    command_line: &str,
    dir: &Path,
) -> io::Result<()> {
    for sub in cmd.get_subcommands() {
        let name = format!("{page_name}-{}", sub.get_name());
        let line = format!("{command_line} {}", sub.get_name());
        let sub = sub.clone().display_name(&name).bin_name(&line);
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone())
            .section("8")
            .render(&mut page)?;
        fs::write(dir.join(format!("{name}.8")), page)?;
        write_subcommand_pages(&sub, &name, &line, dir)?;
    }
    Ok(())
}

/// Converts the subset of Markdown the configuration reference uses:
/// `#` (the title), `##`/`###` headings, paragraphs, `- ` lists, fenced
/// code and tables (each row becomes a tagged paragraph: the first cell in
/// bold as the tag, the other cells as "header: value" lines).
fn markdown_to_roff(markdown: &str, title: &str, section: &str) -> String {
    let mut out = format!(".TH \"{title}\" \"{section}\" \"\" \"spoolfs\" \"File Formats\"\n");
    let mut lines = markdown.lines().peekable();
    let mut header: Vec<String> = Vec::new();
    while let Some(line) = lines.next() {
        if let Some(heading) = line.strip_prefix("# ") {
            let (name, summary) = heading.split_once(" — ").unwrap_or((heading, ""));
            let name = name.trim_matches('`');
            out.push_str(&format!(
                ".SH NAME\n{} \\- {}\n",
                inline(name),
                inline(summary)
            ));
        } else if let Some(heading) = line.strip_prefix("## ") {
            out.push_str(&format!(".SH \"{}\"\n", inline(heading).to_uppercase()));
        } else if let Some(heading) = line.strip_prefix("### ") {
            out.push_str(&format!(".SS \"{}\"\n", inline(heading)));
        } else if line.starts_with("```") {
            out.push_str(".PP\n.RS 4\n.nf\n");
            for code in lines.by_ref().take_while(|l| !l.starts_with("```")) {
                out.push_str(&escape_line(code));
                out.push('\n');
            }
            out.push_str(".fi\n.RE\n");
        } else if line.starts_with('|') {
            let cells = table_cells(line);
            if header.is_empty() {
                header = cells;
            } else if !cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
            {
                out.push_str(&format!(".TP\n\\fB{}\\fR\n", inline(&cells[0])));
                for (name, value) in header.iter().zip(&cells).skip(1) {
                    out.push_str(&format!("{}: {}\n.br\n", inline(name), inline(value)));
                }
            }
            if lines.peek().is_none_or(|next| !next.starts_with('|')) {
                header.clear();
            }
        } else if let Some(item) = line.strip_prefix("- ") {
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&inline(item));
            out.push('\n');
        } else if line.trim().is_empty() {
            out.push_str(".PP\n");
        } else {
            out.push_str(&inline(line.trim_start()));
            out.push('\n');
        }
    }
    out
}

fn table_cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|cell| cell.trim().to_string())
        .collect()
}

/// Inline Markdown to roff: `code` and **strong** in bold, [text](link)
/// as its text; roff's special characters escaped.
fn inline(text: &str) -> String {
    let text = escape_line(text);
    let mut out = String::new();
    let mut rest = text.as_str();
    let (mut bold, mut code) = (false, false);
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            out.push_str(if code { "\\fR" } else { "\\fB" });
            code = !code;
            rest = &rest[1..];
        } else if code {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        } else if let Some(after) = rest.strip_prefix("**") {
            out.push_str(if bold { "\\fR" } else { "\\fB" });
            bold = !bold;
            rest = after;
        } else if let Some((label, after)) = link(rest) {
            out.push_str(label);
            rest = after;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// `[label](target)` at the start of `text`: the label and what follows.
fn link(text: &str) -> Option<(&str, &str)> {
    let body = text.strip_prefix('[')?;
    let (label, after) = body.split_once("](")?;
    let (_, rest) = after.split_once(')')?;
    (!label.contains(['[', '`'])).then_some((label, rest))
}

/// Escapes backslashes and hyphens, and keeps a leading `.` or `'` from
/// reading as a roff request.
fn escape_line(line: &str) -> String {
    let escaped = line.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}
