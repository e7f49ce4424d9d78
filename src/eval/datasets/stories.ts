/**
 * Children's stories in the style of TinyStories, from a seeded template grammar: material
 * the embedded 260K-parameter model (trained on TinyStories) can actually continue, so
 * compression effects show up as measurable changes rather than noise.
 *
 * Two uses: continuation fidelity (plain stories) and name recall (a story cut right before
 * a late mention of its main character, whose name was introduced early).
 */
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { SeededRandom, seedFrom } from './random.js';

const GIRLS = ['Lily', 'Sue', 'Anna', 'Mia', 'Lucy', 'Amy', 'Sara', 'Emma', 'Zoe', 'Kate'] as const;
const BOYS = ['Tom', 'Tim', 'Ben', 'Max', 'Sam', 'Jack', 'Joe', 'Bob', 'Leo', 'Dan'] as const;

/** Every name a story character can have (common TinyStories names). */
export const STORY_NAMES: readonly string[] = [...GIRLS, ...BOYS];

interface Person {
  name: string;
  girl: boolean;
}

interface Pronouns {
  he: string;
  him: string;
  his: string;
}

const pronouns = (girl: boolean): Pronouns => (girl ? { he: 'she', him: 'her', his: 'her' } : { he: 'he', him: 'him', his: 'his' });
const cap = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);

const PARENTS = [
  { noun: 'mom', girl: true, call: 'Mom' },
  { noun: 'dad', girl: false, call: 'Dad' },
  { noun: 'grandma', girl: true, call: 'Grandma' },
  { noun: 'grandpa', girl: false, call: 'Grandpa' },
] as const;

const PLACES: readonly { name: string; ground: string; landmark: string; details: readonly string[] }[] = [
  { name: 'park', ground: 'grass', landmark: 'big slide', details: ['There were tall trees and a big slide.', 'Many kids were playing on the swings.'] },
  { name: 'beach', ground: 'sand', landmark: 'big rock', details: ['The sand was warm and the water was blue.', 'The waves went up and down.'] },
  { name: 'forest', ground: 'soft moss', landmark: 'old tree', details: ['The trees were very tall and green.', 'The path was full of leaves.'] },
  { name: 'garden', ground: 'grass', landmark: 'little fence', details: ['There were red and yellow flowers everywhere.', 'A little bee flew from flower to flower.'] },
  { name: 'farm', ground: 'grass', landmark: 'red barn', details: ['There were cows, pigs and a big red barn.', 'The hens said cluck, cluck.'] },
  { name: 'lake', ground: 'grass', landmark: 'wooden dock', details: ['The water was calm and shiny.', 'Some ducks were swimming near the shore.'] },
];

const KID_ADJECTIVES = ['little', 'kind', 'happy', 'curious', 'brave', 'shy', 'sweet', 'playful'];
const ACTIVITIES = [
  'play outside',
  'draw pictures',
  'sing songs',
  'look at the clouds',
  'read books',
  'run and jump',
  'build towers with blocks',
  'jump in puddles',
  'pick flowers',
  'help in the kitchen',
];
const OBJECTS = ['ball', 'kite', 'hat', 'teddy bear', 'toy car', 'balloon', 'doll', 'toy boat'];
const OBJECT_ADJECTIVES = ['red', 'blue', 'yellow', 'big', 'small', 'shiny', 'soft', 'new'];
const ANIMALS: readonly { name: string; joy: string }[] = [
  { name: 'dog', joy: 'wagged its tail' },
  { name: 'puppy', joy: 'wagged its tail' },
  { name: 'cat', joy: 'purred happily' },
  { name: 'kitten', joy: 'purred softly' },
  { name: 'bird', joy: 'sang a happy song' },
  { name: 'frog', joy: 'jumped up and down' },
  { name: 'bunny', joy: 'hopped around in a circle' },
  { name: 'duck', joy: 'said quack, quack' },
  { name: 'squirrel', joy: 'did a funny little dance' },
];
const ANIMAL_ADJECTIVES = ['small', 'fluffy', 'little', 'brown', 'white', 'tiny'];
const HIDING_PLACES = ['under a big tree', 'behind a rock', 'near the water', 'in the tall grass', 'under a bush'];
const FOODS = ['apples', 'cookies', 'sandwiches', 'berries', 'carrots', 'grapes'];
const SHELTERS = ['a big tree', 'a little shed', 'their car'];
/** Lessons that fit each plot, for the "X learned that …" ending. */
const MORALS = {
  lost: ['friends help each other', 'it is good to ask for help'],
  animal: ['it is good to help others', 'being kind is always a good idea'],
  rain: ['a rainy day can still be a happy day', 'it is fun to wait with someone you love'],
  found: ['it is good to give back what is not yours', 'sharing makes everyone happy'],
} as const;
const FILLERS = [
  'The sun was warm and the sky was blue.',
  'A soft wind moved the leaves.',
  'Some birds were singing in the trees.',
  'It was a beautiful day.',
];

/** Marks a mention of the main character that name recall may cut before. */
const SLOT = '\u0001';

/** One story as sentences; SLOT stands for the main character's name at recall-worthy places. */
class StoryWriter {
  readonly sentences: string[] = [];
  readonly kid: Person;
  readonly p: Pronouns;
  private readonly friend: Person;
  private readonly parent: (typeof PARENTS)[number];
  private readonly place: (typeof PLACES)[number];

  constructor(private readonly rng: SeededRandom) {
    const girl = rng.chance(0.5);
    this.kid = { name: rng.pick(girl ? GIRLS : BOYS), girl };
    this.p = pronouns(girl);
    // The friend's name starts with another letter, so its first token differs from the kid's.
    const friendGirl = rng.chance(0.5);
    this.friend = { name: rng.pick((friendGirl ? GIRLS : BOYS).filter((n) => n[0] !== this.kid.name[0])), girl: friendGirl };
    this.parent = rng.pick(PARENTS);
    this.place = rng.pick(PLACES);
  }

  private say(...sentences: string[]): void {
    this.sentences.push(...sentences);
  }

  private filler(p: number): void {
    if (this.rng.chance(p)) this.say(this.rng.pick(FILLERS));
  }

  private get name(): string {
    return this.kid.name;
  }

  /** Subject pronoun or name, varied as a storyteller would. */
  private subject(): string {
    return this.rng.chance(0.5) ? this.name : cap(this.p.he);
  }

  write(): string[] {
    const { rng, p, parent, place } = this;
    const kidNoun = this.kid.girl ? 'girl' : 'boy';
    const adjective = rng.pick(KID_ADJECTIVES);
    this.say(
      rng.pick([
        `Once upon a time, there was a ${adjective} ${kidNoun} named ${this.name}.`,
        `Once upon a time, in a small ${rng.pick(['town', 'village'])}, there lived a ${adjective} ${kidNoun} named ${this.name}.`,
        `There was once a ${adjective} ${kidNoun} called ${this.name}.`,
      ]),
    );
    const traits = rng.shuffle([
      `${cap(p.he)} loved to ${rng.pick(ACTIVITIES)}.`,
      `${this.name} liked to ${rng.pick(ACTIVITIES)} every day.`,
      `${cap(p.he)} lived in a little house with ${p.his} ${parent.noun}.`,
      `${cap(p.he)} was always kind to everyone.`,
    ]);
    this.say(...traits.slice(0, rng.int(1, 3)));
    this.say(
      rng.pick([
        `One day, ${this.name} went to the ${place.name} with ${p.his} ${parent.noun}.`,
        `One sunny morning, ${this.name} and ${p.his} ${parent.noun} walked to the ${place.name}.`,
        `One day, ${this.name}'s ${parent.noun} said, "Let's go to the ${place.name}!" "Yay!" said ${SLOT}.`,
      ]),
    );
    if (rng.chance(0.7)) this.say(rng.pick(place.details));
    this.filler(0.4);
    const interludes = [() => this.snack(), () => this.hideAndSeek(), () => this.smallCreature(), () => this.song()];
    for (const interlude of rng.sample(interludes, rng.int(0, 3))) interlude();
    const plot = rng.pick(['lost', 'animal', 'rain', 'found'] as const);
    if (plot === 'lost') this.lostThing();
    else if (plot === 'animal') this.animalFriend();
    else if (plot === 'rain') this.rainyDay();
    else this.foundThing();
    this.filler(0.3);
    const walkedHome = rng.chance(0.5);
    if (walkedHome) this.goingHome();
    const endings = [
      `That night, ${this.name} went to bed happy.`,
      `${this.name} learned that ${rng.pick(MORALS[plot])}.`,
      `It was the best day ever.`,
    ];
    if (!walkedHome) endings.push(`At the end of the day, ${this.name} went home with a big smile.`);
    this.say(...rng.sample(endings, rng.int(1, 3)));
    return this.sentences;
  }

  private snack(): void {
    const food = this.rng.pick(FOODS);
    this.say(
      `${this.name} and ${this.p.his} ${this.parent.noun} sat on a ${this.rng.pick(['bench', 'blanket', 'log'])} and ate ${food}.`,
      `"These ${food} are so good!" said ${SLOT}.`,
    );
  }

  private hideAndSeek(): void {
    const { p, parent } = this;
    this.say(
      `${this.name} played hide and seek with ${p.his} ${parent.noun}.`,
      `${cap(p.he)} hid ${this.rng.pick(['behind a tree', 'under a bench', 'behind a big box'])}, but ${p.his} ${parent.noun} found ${p.him} fast.`,
      `${this.name} laughed and laughed.`,
    );
  }

  private smallCreature(): void {
    const { rng } = this;
    this.say(
      `${this.subject()} saw a ${rng.pick(['butterfly', 'ladybug', 'snail', 'little bug'])} on a leaf.`,
      `It was ${rng.pick(['red', 'blue', 'yellow', 'orange'])} and very pretty.`,
      `"Look, ${this.parent.call}!" said ${SLOT}.`,
    );
  }

  private song(): void {
    const { p, parent } = this;
    this.say(
      `${this.name} sang a little song about the ${this.rng.pick(['sun', 'sky', 'flowers', 'trees'])}.`,
      `${cap(p.his)} ${parent.noun} smiled and clapped.`,
    );
  }

  private goingHome(): void {
    const { rng, p, parent } = this;
    this.say(
      `On the way home, ${this.name} saw ${rng.pick(['a pretty flower', 'a big truck', 'a funny cloud', 'a red bird'])}.`,
      `${cap(p.he)} told ${p.his} ${parent.noun} all about it.`,
      `When they got home, ${p.his} ${parent.noun} made ${rng.pick(['warm soup', 'pancakes', 'a warm drink', 'a little cake'])}.`,
      `${this.name} ate it all and said thank you.`,
    );
  }

  private lostThing(): void {
    const { rng, p, place, friend } = this;
    const noun = rng.pick(OBJECTS);
    this.say(
      `${this.name} had a ${rng.pick(OBJECT_ADJECTIVES)} ${noun}.`,
      rng.pick([`${cap(p.he)} played with the ${noun} on the ${place.ground}.`, `${cap(p.he)} threw the ${noun} up high and laughed.`]),
      rng.pick([
        `Suddenly, a strong wind came and the ${noun} flew up into a tall tree.`,
        `Then the ${noun} rolled away and got stuck in a thick bush.`,
      ]),
      rng.pick([`${this.name} was very sad.`, `${this.name} felt sad and started to cry.`, `${cap(p.he)} could not reach it.`]),
    );
    const helper = rng.int(0, 3);
    let thanks: string;
    if (helper === 0) {
      const f = pronouns(friend.girl);
      this.say(
        `Just then, ${p.his} friend ${friend.name} came by.`,
        `"Why are you sad, ${this.name}?" asked ${friend.name}.`,
        `"My ${noun} is stuck," said ${SLOT}.`,
        `"Don't worry, I will help you," said ${friend.name}.`,
        `${friend.name} found a long stick, and ${f.he} got the ${noun} back.`,
      );
      thanks = friend.name;
    } else if (helper === 1) {
      const parent = this.parent;
      this.say(
        `${cap(p.his)} ${parent.noun} saw what happened.`,
        `${cap(p.his)} ${parent.noun} was tall, so ${parent.girl ? 'she' : 'he'} reached up and got the ${noun}.`,
      );
      thanks = parent.call;
    } else {
      const animal = rng.pick(ANIMALS).name;
      this.say(`A friendly ${animal} saw what happened.`, `The ${animal} ran to the ${noun} and brought it back.`);
      thanks = `little ${animal}`;
    }
    this.say(`${this.name} hugged the ${noun}.`, `"Thank you, ${thanks}!" said ${SLOT}.`);
    this.filler(0.5);
    if (rng.chance(0.6)) this.say(`They played together until it was time to go home.`);
  }

  private animalFriend(): void {
    const { rng, p } = this;
    const animal = rng.pick(ANIMALS);
    const a = animal.name;
    const mood = rng.pick(['hungry', 'lost', 'scared']);
    this.say(
      `At the ${this.place.name}, ${this.name} saw a ${rng.pick(ANIMAL_ADJECTIVES)} ${a} ${rng.pick(HIDING_PLACES)}.`,
      `The ${a} looked ${mood}.`,
      `"Hello, little ${a}," said ${SLOT}. "Are you okay?"`,
    );
    if (mood === 'hungry') {
      const food = rng.pick(FOODS);
      this.say(`${this.name} had ${food} in ${p.his} bag.`, `${cap(p.he)} gave some to the ${a}.`, `The ${a} ate it all up.`);
    } else if (mood === 'lost') {
      this.say(
        `The ${a} could not find its mom.`,
        `${this.subject()} wanted to help.`,
        `${this.name} and the ${a} looked everywhere.`,
        `At last, they found the ${a}'s mom near the ${this.place.landmark}.`,
      );
    } else {
      this.say(`${this.name} sat down and talked softly to the ${a}.`, `Soon, the ${a} was not scared anymore.`);
    }
    this.say(`The ${a} was very happy.`, `It ${animal.joy}.`);
    this.filler(0.5);
    this.say(
      rng.pick([`"I am glad I could help," said ${SLOT}.`, `"You are my friend now," said ${SLOT}.`]),
      `From that day on, ${this.name} and the ${a} were best friends.`,
    );
  }

  private rainyDay(): void {
    const { rng, p, parent } = this;
    this.say(
      `${this.name} was ${rng.pick(['playing', 'running', 'jumping', 'singing'])} at the ${this.place.name}.`,
      `Then, big gray clouds came and it started to rain.`,
      `"Oh no!" said ${SLOT}. "I am getting wet!"`,
      `${this.name} and ${p.his} ${parent.noun} ran to ${rng.pick(SHELTERS)}.`,
      `They waited for the rain to stop.`,
    );
    if (rng.chance(0.6)) this.say(`${cap(p.his)} ${parent.noun} told ${p.him} a funny story while they waited.`);
    this.say(`Soon, the sun came out and a big rainbow was in the sky.`, `"Look, a rainbow!" said ${SLOT}.`);
    this.filler(0.5);
    this.say(`${this.name} and ${p.his} ${parent.noun} walked home together.`);
  }

  private foundThing(): void {
    const { rng, friend } = this;
    const noun = rng.pick(OBJECTS);
    const f = pronouns(friend.girl);
    this.say(
      `At the ${this.place.name}, ${this.name} found a ${rng.pick(OBJECT_ADJECTIVES)} ${noun} ${rng.pick(HIDING_PLACES)}.`,
      `${this.subject()} picked it up and looked at it.`,
      `"Whose ${noun} is this?" ${this.name} wondered.`,
      rng.pick([
        `Then ${this.name} saw a ${friend.girl ? 'girl' : 'boy'} named ${friend.name} who was looking for something.`,
        `A ${friend.girl ? 'girl' : 'boy'} named ${friend.name} was crying near the ${this.place.landmark}.`,
      ]),
      `"Is this your ${noun}?" asked ${SLOT}.`,
      `"Yes! Thank you!" said ${friend.name}.`,
      `${friend.name} was so happy that ${f.he} gave ${this.name} a big hug.`,
    );
    this.filler(0.5);
    this.say(
      `They played with the ${noun} together.`,
      `"Do you want to be my friend?" asked ${friend.name}.`,
      `"Yes!" said ${SLOT}.`,
    );
  }
}

const wordCount = (text: string): number => text.split(/\s+/).filter((w) => w.length > 0).length;

/** Draws stories until one has between minWords and maxWords words. */
function drawStory(rng: SeededRandom, minWords: number, maxWords: number): StoryWriter {
  for (;;) {
    const writer = new StoryWriter(new SeededRandom(rng.nextUint32()));
    const words = wordCount(writer.write().join(' '));
    if (words >= minWords && words <= maxWords) return writer;
  }
}

const storyText = (writer: StoryWriter): string => writer.sentences.join(' ').replaceAll(SLOT, writer.kid.name);

export interface StoryItem {
  id: string;
  text: string;
}

export interface NameRecallItem {
  id: string;
  /** The whole story. */
  text: string;
  /** The story up to a late mention of the main character, without the space before it. */
  prefix: string;
  /** The name that follows: `text` starts with `prefix + " " + answer`. */
  answer: string;
}

/** Story sizes in words. The 512-piece TinyStories vocabulary spends about 2.5 tokens per word
 * and the embedded model reads at most 512 tokens, so stories stay under ~180 words. */
const CONTINUATION_WORDS = [60, 150] as const;
const RECALL_WORDS = [100, 180] as const;

/**
 * Stories for continuation fidelity: `count` stories of 60–150 words (about 150–400 tokens
 * with the TinyStories 512-piece tokenizer), the same for the same seed.
 *
 * @example
 * continuationStories({ count: 2, seed: 1 })[0].text; // "Once upon a time, there was a brave girl named Mia. …"
 */
export function continuationStories(opts: { count: number; seed?: number }): StoryItem[] {
  const rng = new SeededRandom(seedFrom(opts.seed ?? 42, 'continuation'));
  return Array.from({ length: opts.count }, (_, i) => ({ id: `story-${i}`, text: storyText(drawStory(rng, ...CONTINUATION_WORDS)) }));
}

/**
 * Stories of 100–180 words (at most ~450 tokens with the TinyStories tokenizer) cut right before a mention of the main character that comes
 * after at least 40 % of the text — usually a dialogue tag ('"Thank you, Tom!" said'),
 * where only the main character's name fits, sometimes with a friend's name as distractor.
 *
 * @example
 * const [item] = nameRecallStories({ count: 1, seed: 7 });
 * item.prefix.endsWith('said'); // true for most items
 * item.text.startsWith(item.prefix + ' ' + item.answer); // always true
 */
export function nameRecallStories(opts: { count: number; seed?: number }): NameRecallItem[] {
  const rng = new SeededRandom(seedFrom(opts.seed ?? 42, 'name_recall'));
  const items: NameRecallItem[] = [];
  while (items.length < opts.count) {
    const writer = drawStory(rng, ...RECALL_WORDS);
    const name = writer.kid.name;
    const pieces = writer.sentences.join(' ').split(SLOT);
    const text = pieces.join(name);
    // Offsets of the slot mentions in the final text.
    const late: number[] = [];
    let at = 0;
    for (const piece of pieces.slice(0, -1)) {
      at += piece.length;
      if (at >= text.length * 0.4) late.push(at);
      at += name.length;
    }
    if (late.length === 0) continue;
    // Slots always follow a space; the prefix stops before it so the name keeps its leading space.
    const prefix = text.slice(0, rng.pick(late) - 1);
    items.push({ id: `recall-${items.length}`, text, prefix, answer: name });
  }
  return items;
}

/**
 * Stories joined by blank lines until they hold at least `minTokens` tokens: a built-in
 * haystack for needle-in-a-haystack that a TinyStories model reads as in-distribution text.
 *
 * @example
 * const book = storyBook(tokenizer, 2000, 42); // ≥ 2000 tokens of stories
 */
export function storyBook(tokenizer: Tokenizer, minTokens: number, seed: number): string {
  const rng = new SeededRandom(seedFrom(seed, 'story_book'));
  const stories: string[] = [];
  let estimate = 0;
  for (;;) {
    while (estimate < minTokens) {
      const text = storyText(drawStory(rng, ...CONTINUATION_WORDS));
      stories.push(text);
      estimate += tokenizer.encode(text + '\n\n', { bos: false }).length;
    }
    const book = stories.join('\n\n');
    const exact = tokenizer.encode(book, { bos: false }).length;
    if (exact >= minTokens) return book;
    estimate = exact;
  }
}
