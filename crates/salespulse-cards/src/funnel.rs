//! The configured pipelines and stages, and how event values fold onto them.
//!
//! A *slot* is one `(pipeline, stage)` label pair a deal can sit in: every configured stage of
//! every configured pipeline, then `stage="other"` of that pipeline, and finally the single slot
//! `pipeline="other", stage="other"` for everything else. Slots are numbered in configured order,
//! which is also the order series are rendered in and the tie-break of the top stage.
//!
//! A *transition* is one `(pipeline, stage_from, stage_to)` triple: `(S + 1)²` per configured
//! pipeline of `S` stages, plus one for the `other` pipeline.

use crate::ConfigError;
use crate::PipelineConfig;

/// The label value that unknown (or absent) pipelines and stages fold into.
pub(crate) const OTHER: &str = "other";

/// Longest pipeline or stage name accepted as a label value.
const MAX_NAME_BYTES: usize = 128;

#[derive(Debug, Clone)]
pub(crate) struct Funnel {
    pipelines: Vec<PipelineConfig>,
    /// Per configured pipeline, its first slot; one more entry for the `other` pipeline.
    slot_base: Vec<u32>,
    /// Per configured pipeline, its first transition; one more entry for the `other` pipeline.
    transition_base: Vec<u32>,
    slots: usize,
}

impl Funnel {
    pub(crate) fn new(pipelines: &[PipelineConfig]) -> Result<Funnel, ConfigError> {
        let bad = |what: String| Err(ConfigError::Pipeline(what));
        for (i, pipeline) in pipelines.iter().enumerate() {
            if let Some(problem) = name_problem(&pipeline.name) {
                return bad(format!("pipeline {:?} {problem}", pipeline.name));
            }
            if pipelines[..i].iter().any(|p| p.name == pipeline.name) {
                return bad(format!("pipeline {:?} is configured twice", pipeline.name));
            }
            for (j, stage) in pipeline.stages.iter().enumerate() {
                if let Some(problem) = name_problem(stage) {
                    return bad(format!("stage {stage:?} of pipeline {:?} {problem}", pipeline.name));
                }
                if pipeline.stages[..j].contains(stage) {
                    return bad(format!("stage {stage:?} of pipeline {:?} is listed twice", pipeline.name));
                }
            }
        }
        let mut slot_base = Vec::with_capacity(pipelines.len() + 1);
        let mut transition_base = Vec::with_capacity(pipelines.len() + 1);
        let (mut slots, mut transitions) = (0usize, 0usize);
        for pipeline in pipelines {
            slot_base.push(slots as u32);
            transition_base.push(transitions as u32);
            let width = pipeline.stages.len() + 1;
            slots += width;
            transitions += width * width;
        }
        slot_base.push(slots as u32);
        transition_base.push(transitions as u32);
        slots += 1;
        transitions += 1;
        // Slots are kept as u16 per card; transitions as u32.
        if slots >= usize::from(u16::MAX) || transitions >= u32::MAX as usize {
            return bad(format!("{slots} pipeline stages are too many"));
        }
        Ok(Funnel { pipelines: pipelines.to_vec(), slot_base, transition_base, slots })
    }

    /// The `other` pipeline's index.
    pub(crate) fn other_pipeline(&self) -> usize {
        self.pipelines.len()
    }

    /// A pipeline's index; unknown or absent names fold into the `other` pipeline.
    pub(crate) fn pipeline(&self, name: Option<&str>) -> usize {
        name.and_then(|name| self.pipelines.iter().position(|p| p.name == name)).unwrap_or(self.other_pipeline())
    }

    /// The `other` stage of pipeline `p`.
    pub(crate) fn other_stage(&self, p: usize) -> usize {
        self.pipelines.get(p).map_or(0, |pipeline| pipeline.stages.len())
    }

    /// A stage's index within pipeline `p`; unknown or absent names fold into its `other` stage.
    pub(crate) fn stage(&self, p: usize, name: Option<&str>) -> usize {
        let Some(pipeline) = self.pipelines.get(p) else { return 0 };
        name.and_then(|name| pipeline.stages.iter().position(|s| s == name)).unwrap_or(pipeline.stages.len())
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    #[cfg(test)]
    pub(crate) fn transitions(&self) -> usize {
        self.transition_base.last().map_or(0, |&base| base as usize + 1)
    }

    pub(crate) fn slot(&self, p: usize, s: usize) -> u16 {
        (self.slot_base[p.min(self.other_pipeline())] as usize + s) as u16
    }

    /// The slot of the `other` pipeline (also where deals of unknown location are counted).
    pub(crate) fn other_slot(&self) -> u16 {
        (self.slots - 1) as u16
    }

    /// `(pipeline, stage)` of a slot.
    pub(crate) fn split_slot(&self, slot: u16) -> (usize, usize) {
        let slot = u32::from(slot);
        let p = self.slot_base.partition_point(|&base| base <= slot).saturating_sub(1);
        (p, (slot - self.slot_base[p]) as usize)
    }

    pub(crate) fn transition(&self, p: usize, from: usize, to: usize) -> u32 {
        let p = p.min(self.other_pipeline());
        let width = self.other_stage(p) + 1;
        self.transition_base[p] + (from * width + to) as u32
    }

    /// `(pipeline, stage_from, stage_to)` of a transition.
    pub(crate) fn split_transition(&self, t: u32) -> (usize, usize, usize) {
        let p = self.transition_base.partition_point(|&base| base <= t).saturating_sub(1);
        let width = self.other_stage(p) + 1;
        let within = (t - self.transition_base[p]) as usize;
        (p, within / width, within % width)
    }

    pub(crate) fn pipeline_label(&self, p: usize) -> &str {
        self.pipelines.get(p).map_or(OTHER, |pipeline| pipeline.name.as_str())
    }

    pub(crate) fn stage_label(&self, p: usize, s: usize) -> &str {
        self.pipelines.get(p).and_then(|pipeline| pipeline.stages.get(s)).map_or(OTHER, String::as_str)
    }

    /// The slot's label values.
    pub(crate) fn slot_labels(&self, slot: u16) -> (&str, &str) {
        let (p, s) = self.split_slot(slot);
        (self.pipeline_label(p), self.stage_label(p, s))
    }
}

/// Why a configured name cannot be a label value of its own, if it cannot.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name == OTHER {
        Some("is reserved: unknown pipelines and stages are reported as \"other\"")
    } else if name.len() > MAX_NAME_BYTES {
        Some("is longer than 128 bytes")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(name: &str, stages: &[&str]) -> PipelineConfig {
        PipelineConfig { name: name.into(), stages: stages.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn slots_and_transitions_round_trip() {
        let funnel = Funnel::new(&[pipeline("b2b", &["new", "proposal"]), pipeline("retail", &["open"])]).unwrap();
        // b2b: new, proposal, other; retail: open, other; other/other.
        assert_eq!(funnel.slots(), 6);
        assert_eq!(funnel.transitions(), 9 + 4 + 1);
        for slot in 0..funnel.slots() as u16 {
            let (p, s) = funnel.split_slot(slot);
            assert_eq!(funnel.slot(p, s), slot);
        }
        for t in 0..funnel.transitions() as u32 {
            let (p, from, to) = funnel.split_transition(t);
            assert_eq!(funnel.transition(p, from, to), t);
        }
        for (pipeline_name, stage, expected) in [
            (Some("b2b"), Some("new"), ("b2b", "new")),
            (Some("b2b"), Some("proposal"), ("b2b", "proposal")),
            (Some("b2b"), Some("won"), ("b2b", "other")),
            (Some("b2b"), None, ("b2b", "other")),
            (Some("retail"), Some("new"), ("retail", "other")),
            (Some("retail"), Some("open"), ("retail", "open")),
            (Some("B2B"), Some("new"), ("other", "other")),
            (None, Some("new"), ("other", "other")),
            (Some("wholesale"), Some("open"), ("other", "other")),
        ] {
            let p = funnel.pipeline(pipeline_name);
            let slot = funnel.slot(p, funnel.stage(p, stage));
            assert_eq!(funnel.slot_labels(slot), expected, "{pipeline_name:?} {stage:?}");
        }
        assert_eq!(funnel.other_slot(), 5);
    }

    #[test]
    fn bad_pipelines_are_refused() {
        for pipelines in [
            vec![pipeline("", &["a"])],
            vec![pipeline("other", &["a"])],
            vec![pipeline("p", &["other"])],
            vec![pipeline("p", &["a", "a"])],
            vec![pipeline("p", &[""])],
            vec![pipeline("p", &["a\nb"])],
            vec![pipeline("p", &["a"]), pipeline("p", &["b"])],
            vec![pipeline(&"x".repeat(129), &[])],
        ] {
            assert!(matches!(Funnel::new(&pipelines), Err(ConfigError::Pipeline(_))), "{pipelines:?}");
        }
        assert!(Funnel::new(&[pipeline("p", &[])]).is_ok());
    }
}
