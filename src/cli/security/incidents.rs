//! `portcullis security incidents`: list, show, open by hand, assign,
//! note and resolve incidents.

use crate::cli::{output, usage};
use crate::core::incidents::IncidentFilter;
use crate::core::Core;
use crate::model::{escape_control, IncidentSeverity, Millis};
use clap::{Subcommand, ValueEnum};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::cli) enum Which {
    /// Open and investigating.
    Open,
    Resolved,
    All,
}

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum IncidentsCmd {
    /// List incidents, newest first: open (open and investigating, the
    /// default), resolved or all.
    List {
        #[arg(value_enum, default_value_t = Which::Open)]
        which: Which,
        #[arg(long)]
        json: bool,
    },
    /// One incident: its timeline, linked events, evidence, MTTD and MTTR.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Open an incident by hand (type manual); the sysops are mailed.
    Create {
        title: String,
        /// low, medium, high or critical.
        severity: String,
        #[arg(default_value = "")]
        description: String,
        #[arg(long)]
        json: bool,
    },
    /// Assign an incident to someone (an open one becomes investigating).
    Assign { id: i64, who: String },
    /// Add a note to an incident's timeline.
    Note { id: i64, text: String },
    /// Resolve an incident, with what was found and done.
    Resolve { id: i64, notes: String },
}

pub(super) fn run(core: Core, cmd: IncidentsCmd) -> anyhow::Result<i32> {
    let now = Millis::now();
    let actor = crate::cli::actor();
    match cmd {
        IncidentsCmd::List { which, json } => {
            let filter = match which {
                Which::Open => IncidentFilter::Open,
                Which::Resolved => IncidentFilter::Resolved,
                Which::All => IncidentFilter::All,
            };
            output::incidents(&core.list_incidents(filter)?, json)?;
        }
        IncidentsCmd::Show { id, json } => output::incident(&core.show_incident(id)?, json)?,
        IncidentsCmd::Create { title, severity, description, json } => {
            let severity = IncidentSeverity::parse(&severity)
                .ok_or_else(|| usage(format!("unknown severity {:?} (one of: low, medium, high, critical)", escape_control(&severity))))?;
            let created = core.create_incident(&title, severity, &description, &actor, now)?;
            let i = &created.incident;
            if json {
                output::incidents(std::slice::from_ref(i), true)?;
            } else {
                println!("opened incident {} ({}, {}): {}", i.id, i.severity, crate::core::incidents::priority_name(i.priority), escape_control(&i.title));
                match created.notified.len() {
                    0 => println!("nobody was mailed: no member of the sysops group has an email address and incidents.notify is empty"),
                    n => println!("a notice was queued for {}: {}", crate::flow::pager::count(n as u64, "address", "addresses"), escape_control(&created.notified.join(", "))),
                }
            }
        }
        IncidentsCmd::Assign { id, who } => {
            let i = core.assign_incident(id, &who, &actor, now)?;
            println!("incident {id} assigned to {} ({})", escape_control(i.assigned_to.as_deref().unwrap_or("")), i.status);
        }
        IncidentsCmd::Note { id, text } => {
            core.note_incident(id, &text, &actor, now)?;
            println!("note added to incident {id}");
        }
        IncidentsCmd::Resolve { id, notes } => {
            let i = core.resolve_incident(id, &notes, &actor, now)?;
            let mttr = crate::core::incidents::mttr_ms(&i).unwrap_or(0);
            println!("incident {id} resolved (MTTR {})", output::duration_ms(mttr));
        }
    }
    Ok(0)
}
