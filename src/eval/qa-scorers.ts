/**
 * How the question-answering datasets turn predictions into scores: RULER by string match per
 * task, NIAH by ROUGE against the needle, a local JSONL file by each task's own metric.
 */
import { RULER_TASKS } from './datasets/ruler.js';
import { aime25Metrics, longbenchScore, math500Metrics, niahRouge, rulerScores, stringMatchPart } from './metrics.js';
import type { QaScorer } from './qa-task.js';
import type { ScoreInfo } from './run-metrics.js';
import { pct } from './task.js';

export const rulerScorer: QaScorer = (samples, predictions) => {
  const { perTask, average } = rulerScores(samples.map((s, i) => ({ task: s.task, prediction: predictions[i], answers: s.answers })));
  const scores: Record<string, number> = { score: average };
  const scoreInfo: Record<string, ScoreInfo> = { score: { ...pct('RULER score (mean over tasks)', true), axis: 'RULER score (%)' } };
  for (const [task, v] of Object.entries(perTask)) {
    scores[task] = v;
    scoreInfo[task] = pct(`RULER ${task} (string match)`, false);
  }
  return { scores, scoreInfo };
};

export const niahScorer: QaScorer = (samples, predictions) => {
  let r1 = 0, rl = 0;
  samples.forEach((s, i) => {
    const needle = typeof s.extra?.needle === 'string' ? s.extra.needle : s.answers[0];
    const r = niahRouge(needle, predictions[i]);
    r1 += r.rouge1.f;
    rl += r.rougeL.f;
  });
  const n = samples.length;
  return {
    scores: { rougeL_f: (100 * rl) / n, rouge1_f: (100 * r1) / n },
    scoreInfo: { rougeL_f: { ...pct('NIAH ROUGE-L F, %', true), axis: 'ROUGE-L F (%)' }, rouge1_f: pct('NIAH ROUGE-1 F, %', false) },
  };
};

/**
 * Local JSONL: each task with its own metric — RULER tasks by string match, LongBench tasks by
 * their official metric, aime25/math500 by boxed answer; other tasks (InfiniteBench, LooGLE…)
 * by "any reference contained" (RULER's string_match_part). `score` is the mean over tasks.
 */
export const jsonlScorer: QaScorer = (samples, predictions) => {
  const byTask = new Map<string, number[]>();
  samples.forEach((s, i) => byTask.set(s.task, [...(byTask.get(s.task) ?? []), i]));
  const scores: Record<string, number> = {};
  const scoreInfo: Record<string, ScoreInfo> = {};
  for (const [task, idx] of byTask) {
    const preds = idx.map((i) => predictions[i]), refs = idx.map((i) => samples[i].answers);
    let metric: string, value: number;
    if ((RULER_TASKS as readonly string[]).includes(task)) {
      value = rulerScores(idx.map((i) => ({ task, prediction: predictions[i], answers: samples[i].answers }))).average;
      metric = 'string match';
    } else if (task === 'aime25' || task === 'math500') {
      value = 100 * (task === 'aime25' ? aime25Metrics : math500Metrics)(preds, refs.map((r) => r[0])).accuracy;
      metric = 'boxed-answer accuracy';
    } else {
      const classes = samples[idx[0]].extra?.all_classes;
      const lb = longbench(task, preds, refs, Array.isArray(classes) ? classes.map(String) : []);
      if (lb !== null) {
        value = lb;
        metric = 'LongBench metric';
      } else {
        value = stringMatchPart(preds, refs);
        metric = 'any reference contained';
      }
    }
    scores[task] = value;
    scoreInfo[task] = pct(`${task} (${metric})`, false);
  }
  const values = Object.values(scores);
  scores.score = values.reduce((a, b) => a + b, 0) / values.length;
  scoreInfo.score = { ...pct('mean score over tasks', true), axis: 'score (%)' };
  return { scores, scoreInfo };
};

/** LongBench's official score of a task, or null when the task is not a LongBench one. */
function longbench(task: string, preds: string[], refs: string[][], classes: string[]): number | null {
  try {
    return longbenchScore(task, preds, refs, classes);
  } catch (e) {
    if ((e as Error).message.startsWith('unknown LongBench task')) return null;
    throw e;
  }
}
